"""Observability: logging, the Prometheus metrics, tracing, and the library internals they borrow."""
