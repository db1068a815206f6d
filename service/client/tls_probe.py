"""Why a connection failed when grpc says only "Socket closed": a TLS handshake of our own.

grpc reports a server that refused our certificate, or a TLS port spoken to in plaintext, only as
a closed socket. A handshake with Python's ssl module hears whether the server wants a client
certificate, and so names the mistake, as ports.py asks the OS why a port cannot be bound.

The handshake checks nothing of the server (grpc has, or has said why not), so it presents nothing:
no client certificate goes to a peer nobody verified. That the server wants one is in its answer
to a handshake without one; with one configured, grpc presented it and the server closed the
connection: it refused it.
"""

from __future__ import annotations

import socket
import ssl

_NO_CERTIFICATE = "the server requires a client certificate: pass --cert and --key"
_REFUSED = (
    "the server refused the client certificate: it must be signed by the server's client CA, "
    "unexpired, and for client use"
)
# The alerts (OpenSSL's reason names) a server sends for a handshake without a client certificate
# when it wants one: TLS 1.3's certificate_required, and the handshake_failure of TLS 1.2 servers.
_CERTIFICATE_WANTED = ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE")


def host_and_port(target: str) -> tuple[str, int] | None:
    """``target``'s host and port when it names one server ("host:port", "[::1]:port"), else None."""
    if "," in target or "/" in target:
        return None
    for scheme in ("ipv4:", "ipv6:", "dns:"):
        target = target.removeprefix(scheme)
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _context() -> ssl.SSLContext:
    # Only the server's reaction matters here, not whether we trust it (grpc has checked that).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    return context


def _wants_certificate(error: ssl.SSLError) -> bool:
    reason = str(error.reason or error)
    return any(name in reason for name in _CERTIFICATE_WANTED)


def why_tls_failed(host: str, port: int, with_certificate: bool = False, timeout: float = 3.0) -> str | None:
    """What the server at ``host:port`` objects to, for a client with (or without) a certificate, or None.

    The probe's own handshake presents no certificate, whatever ``with_certificate`` says.
    """
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            _context().wrap_socket(raw, server_hostname=host) as tls,
        ):
            # In TLS 1.3 the server judges the client's certificate after the handshake. grpc's server
            # then sends its HTTP/2 settings at once if it accepts none, and closes the connection if not.
            wanted = tls.recv(1) == b""
    except ssl.SSLError as error:
        wanted = _wants_certificate(error)
    except OSError:
        return None
    if not wanted:
        return None
    return _REFUSED if with_certificate else _NO_CERTIFICATE


def speaks_tls(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether the server at ``host:port`` completes a TLS handshake (any certificate)."""
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            _context().wrap_socket(raw, server_hostname=host),
        ):
            return True
    except ssl.SSLError as error:
        # A server that wants a client certificate may refuse the handshake itself (TLS 1.2): TLS still.
        return _wants_certificate(error)
    except OSError:
        return False
