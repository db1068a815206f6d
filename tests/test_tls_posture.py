"""TLS posture, checked by real scanners: sslyze finds only TLS 1.2/1.3 with AEAD, forward-secret suites and a
chain our CA verifies; openssl s_client sees the server ask for a client certificate when mTLS is on."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from service.server.factory import BuiltServer

from .conftest import Pki, running, server_settings
from .processes import clean_env, run

SSLYZE = Path(__file__).resolve().parent.parent / ".venv-deploy" / "bin" / "sslyze"


@pytest.fixture
async def scan(server: BuiltServer, pki: Pki, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "sslyze.json"
    versions = ["--sslv2", "--sslv3", "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3"]
    checks = ["--certinfo", f"--certinfo_ca_file={pki.ca}", "--compression", "--heartbleed"]
    command = [str(SSLYZE), *versions, *checks, f"--json_out={out}"]
    result = await asyncio.to_thread(run, [*command, f"localhost:{server.port}"], clean_env(), 120)
    assert result.returncode == 0, result.stdout + result.stderr
    [server_result] = json.loads(out.read_text())["server_scan_results"]
    assert server_result["scan_status"] == "COMPLETED"
    return dict(server_result["scan_result"])


def _accepted(scan: dict[str, Any], version: str) -> list[str]:
    return [s["cipher_suite"]["name"] for s in scan[f"{version}_cipher_suites"]["result"]["accepted_cipher_suites"]]


async def test_only_tls_1_2_and_1_3(scan: dict[str, Any]) -> None:
    for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        assert _accepted(scan, old) == [], old
    assert _accepted(scan, "tls_1_2")
    assert _accepted(scan, "tls_1_3")


async def test_only_aead_suites_with_forward_secrecy(scan: dict[str, Any]) -> None:
    for suite in _accepted(scan, "tls_1_2"):
        assert suite.startswith("TLS_ECDHE_"), suite  # ephemeral key exchange: forward secrecy
        assert "_GCM_" in suite or "CHACHA20_POLY1305" in suite, suite  # AEAD only
    # TLS 1.3 suites are all AEAD with ephemeral key exchange by design.
    assert set(_accepted(scan, "tls_1_3")) <= {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    }
    assert scan["tls_compression"]["result"]["supports_compression"] is False
    assert scan["heartbleed"]["result"]["is_vulnerable_to_heartbleed"] is False


async def test_chain_verifies_against_our_ca(scan: dict[str, Any], pki: Pki) -> None:
    [deployment] = scan["certificate_info"]["result"]["certificate_deployments"]
    trusted = {r["trust_store"]["name"]: r["was_validation_successful"] for r in deployment["path_validation_results"]}
    assert trusted["Supplied CA file"] is True
    assert not any(ok for name, ok in trusted.items() if name != "Supplied CA file")  # a private CA, as it should be
    leaf = x509.load_pem_x509_certificate(pki.server.read_bytes())
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert dt.timedelta(days=1) < lifetime <= dt.timedelta(days=398)  # the CA/Browser Forum's ceiling


def s_client(port: int, pki: Pki) -> str:
    """What openssl s_client reports of a TLS 1.2 handshake (its stdout also holds raw HTTP/2 bytes)."""
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"]
    command += ["-alpn", "h2", "-CAfile", str(pki.ca), "-tls1_2"]
    result = subprocess.run(command, input=b"", capture_output=True, timeout=30, check=False, env=clean_env())
    return result.stdout.decode("utf-8", "replace")


async def test_mtls_server_requests_a_client_certificate(pki: Pki) -> None:
    async with running(server_settings(pki, mtls=True)) as built:
        report = await asyncio.to_thread(s_client, built.port, pki)
    # s_client prints the certificate types only when the server sent a CertificateRequest.
    assert "Client Certificate Types:" in report
    assert "ECDSA sign" in report


async def test_tls_server_without_mtls_does_not_ask(server: BuiltServer, pki: Pki) -> None:
    report = await asyncio.to_thread(s_client, server.port, pki)
    assert "Verify return code: 0 (ok)" in report
    assert "Client Certificate Types:" not in report
