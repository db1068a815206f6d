"""Certificate rotation: replaced files reach new connections without a restart; a bad replacement is refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from service.client import create_channel, say_hello
from service.security.dev_pki import make_leaf

from .conftest import Pki, client_settings, running, server_settings


def served_serial(port: int, ca: Path) -> int:
    """The serial number of the certificate the server presents to a new TLS connection."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def issue(pki: Pki) -> tuple[bytes, bytes, int]:
    """A new server certificate and key from the same CA: what a rotation installs."""
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    ca_key = serialization.load_pem_private_key((pki.dir / "ca-key.pem").read_bytes(), password=None)
    cert, key = make_leaf(ca, ca_key, "localhost", sans=["localhost", "127.0.0.1"])  # type: ignore[arg-type]
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key, cert.serial_number


def rotatable_tls(pki: Pki, directory: Path) -> dict[str, object]:
    """TLS settings on copies of the server's files in ``directory``, checked at every new connection."""
    for name in ("server.pem", "server-key.pem"):
        shutil.copy(pki.dir / name, directory / name)
    return {"cert_file": directory / "server.pem", "key_file": directory / "server-key.pem", "reload_seconds": 0}


def install(directory: Path, cert: bytes, key: bytes) -> None:
    """Replace both files, each in one step (a Secret volume swaps them together)."""
    for name, data in (("server-key.pem", key), ("server.pem", cert)):
        (directory / f"{name}.new").write_bytes(data)
        os.replace(directory / f"{name}.new", directory / name)


async def test_new_connections_get_the_new_certificate_and_old_ones_keep_working(pki: Pki, tmp_path: Path) -> None:
    tls = rotatable_tls(pki, tmp_path)
    with capture_logs() as logs:
        async with running(server_settings(pki, tls=tls)) as built:
            before = await asyncio.to_thread(served_serial, built.port, pki.ca)
            async with create_channel(client_settings(pki, built.port)) as old_channel:
                assert await say_hello(old_channel, "before") == "Hello, before!"
                cert, key, serial = issue(pki)
                install(tmp_path, cert, key)
                assert await asyncio.to_thread(served_serial, built.port, pki.ca) == serial != before
                # The connection opened before the rotation is unharmed.
                assert await say_hello(old_channel, "after") == "Hello, after!"
            async with create_channel(client_settings(pki, built.port)) as new_channel:
                assert await say_hello(new_channel, "new") == "Hello, new!"
            expiry = built.metrics.certificate_expiry._value.get()
    assert any(entry["event"] == "certificate files reloaded" for entry in logs)
    assert expiry == x509.load_pem_x509_certificate(cert).not_valid_after_utc.timestamp()


async def test_a_bad_replacement_keeps_the_last_good_certificate(pki: Pki, other_pki: Pki, tmp_path: Path) -> None:
    tls = rotatable_tls(pki, tmp_path)
    with capture_logs() as logs:
        async with running(server_settings(pki, tls=tls)) as built:
            before = await asyncio.to_thread(served_serial, built.port, pki.ca)
            # A certificate with the wrong key: the pair cannot work.
            install(tmp_path, pki.server.read_bytes(), other_pki.server_key.read_bytes())
            for _ in range(3):
                assert await asyncio.to_thread(served_serial, built.port, pki.ca) == before
            async with create_channel(client_settings(pki, built.port)) as channel:
                assert await say_hello(channel, "still") == "Hello, still!"
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert [entry["event"] for entry in errors] == ["certificate files rejected; keeping the last good ones"]
    assert "does not match the certificate" in errors[0]["problem"]


async def test_client_ca_bundle_rotation_accepts_old_and_new_during_the_change(
    pki: Pki, other_pki: Pki, tmp_path: Path
) -> None:
    bundle = tmp_path / "client-ca.pem"
    shutil.copy(pki.ca, bundle)
    tls = {"cert_file": pki.server, "key_file": pki.server_key, "client_ca_file": bundle, "reload_seconds": 0}
    async with running(server_settings(pki, tls=tls)) as built:
        old_client = client_settings(pki, built.port, cert_file=pki.client, key_file=pki.client_key)
        new_client = client_settings(pki, built.port, cert_file=other_pki.client, key_file=other_pki.client_key)
        async with create_channel(new_client) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await say_hello(channel, "too early")
        # During the change the bundle holds both CAs: clients of either are accepted.
        (tmp_path / "bundle.new").write_bytes(pki.ca.read_bytes() + other_pki.ca.read_bytes())
        os.replace(tmp_path / "bundle.new", bundle)
        for settings in (old_client, new_client):
            async with create_channel(settings) as channel:
                assert await say_hello(channel, "both") == "Hello, both!"
