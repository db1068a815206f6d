"""Why a connection failed when grpc says only "Socket closed": a TLS handshake of our own.

grpc reports a server that refused our certificate, or a TLS port spoken to in plaintext, only as
a closed socket. A handshake with Python's ssl module, with the client's own certificate, hears
the server's verdict and so names the mistake, as ports.py asks the OS why a port cannot be bound.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

_NO_CERTIFICATE = "the server requires a client certificate: pass --cert and --key"
_REFUSED = (
    "the server refused the client certificate: it must be signed by the server's client CA, "
    "unexpired, and for client use"
)
# Alerts (OpenSSL's reason names) that servers send in the handshake, and what they mean to the caller.
_ALERTS = (
    ("CERTIFICATE_REQUIRED", _NO_CERTIFICATE),
    ("UNKNOWN_CA", _REFUSED),
    ("CERTIFICATE_EXPIRED", _REFUSED),
    ("BAD_CERTIFICATE", _REFUSED),
    ("UNSUPPORTED_CERTIFICATE", _REFUSED),
)


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


def _context(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext:
    # Only the server's reaction matters here, not whether we trust it (grpc has checked that).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


def _alert(error: ssl.SSLError, with_certificate: bool) -> str | None:
    reason = str(error.reason or error)
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason:
        return None
    if "HANDSHAKE_FAILURE" in reason and not with_certificate:
        return _NO_CERTIFICATE  # what TLS 1.2 servers send for a missing certificate
    return next((advice for name, advice in _ALERTS if name in reason), None)


def why_tls_failed(
    host: str, port: int, cert_file: Path | None = None, key_file: Path | None = None, timeout: float = 3.0
) -> str | None:
    """What the server at ``host:port`` objects to in a handshake with this client certificate, or None."""
    with_certificate = cert_file is not None and key_file is not None
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            _context(cert_file, key_file).wrap_socket(raw, server_hostname=host) as tls,
        ):
            # In TLS 1.3 the server judges our certificate after the handshake. grpc's server then
            # sends its HTTP/2 settings at once if it accepts it, and closes the connection if not.
            accepted = tls.recv(1) != b""
    except ssl.SSLError as error:
        return _alert(error, with_certificate)
    except OSError:
        return None
    if accepted:
        return None
    return _REFUSED if with_certificate else _NO_CERTIFICATE


def speaks_tls(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether the server at ``host:port`` completes a TLS handshake (any certificate)."""
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            _context(None, None).wrap_socket(raw, server_hostname=host),
        ):
            return True
    except ssl.SSLError as error:
        # A server that wants a client certificate may refuse the handshake itself (TLS 1.2): TLS still.
        return _alert(error, with_certificate=False) is not None
    except OSError:
        return False
