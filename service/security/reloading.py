"""Server certificates re-read when their files change, for grpc's dynamic credentials, checked cheaply.

grpc calls the fetcher on its own threads at every TLS handshake, so the check is a few stat()
calls at most once per interval, under a lock; the files are parsed only when they changed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from ..config.files import ChangeWatch
from ..config.settings import TlsSettings
from ..errors import ConfigError
from .credentials import ServerTls, load_server_tls


def certificate_configuration(tls: ServerTls) -> Any:
    """grpc's certificate configuration for ``tls``."""
    return grpc.ssl_server_certificate_configuration([(tls.key, tls.chain)], root_certificates=tls.client_ca)


class ServerCertificates:
    """The server's certificate, key and client CA for grpc.dynamic_ssl_server_credentials.

    A replacement is used for new connections within ``interval`` seconds of the change; existing
    connections keep the certificate they were opened with. A replacement that does not load (bad
    PEM, a key that does not match, an expired certificate) keeps the last good set and is logged once.
    """

    def __init__(
        self,
        settings: TlsSettings,
        initial: ServerTls,
        interval: float,
        log: Any,
        on_reload: Callable[[ServerTls], None] = lambda _tls: None,
    ) -> None:
        self._settings, self._log, self._on_reload = settings, log, on_reload
        paths = [p for p in (settings.cert_file, settings.key_file, settings.client_ca_file) if p is not None]
        self._watch = ChangeWatch(paths, interval)
        self._lock = threading.Lock()
        self.current = initial

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that ask ``fetch`` for the current certificates at each new connection."""
        return grpc.dynamic_ssl_server_credentials(
            certificate_configuration(self.current),
            self.fetch,
            require_client_authentication=self.current.mutual,
        )

    def fetch(self) -> Any:
        """grpc's certificate fetcher: a new configuration when the files changed, else None."""
        with self._lock:
            if not self._watch.changed():
                return None
            try:
                tls = load_server_tls(self._settings)
            except ConfigError as exc:
                self._log.error("certificate files rejected; keeping the last good ones", problem=str(exc))
                return None
            if tls.mutual != self.current.mutual:
                self._log.error("certificate files rejected; mutual TLS cannot be turned on or off while running")
                return None
            self.current = tls
            self._on_reload(tls)
            self._log.info("certificate files reloaded", not_after=tls.not_after.isoformat())
            return certificate_configuration(tls)
