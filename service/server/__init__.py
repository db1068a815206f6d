"""The server: the factory that builds it, the lifecycle that runs it, the workers, the app it serves.

Nothing is imported here: the workers' supervisor (server.workers) must not import grpc.
"""
