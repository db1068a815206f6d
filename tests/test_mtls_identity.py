"""mTLS identity: each kind of name has a form of its own (spiffe://, dns:, cn:), so a CN never passes for a
SPIFFE ID or a DNS SAN; a certificate whose URI SANs are not exactly one SPIFFE ID is refused, not named by its CN."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from service.client import create_channel, say_hello
from service.security.dev_pki import make_leaf, write_pair

from .conftest import Pki, client_settings, running, server_settings

# Written for the SPIFFE ID and the DNS SAN; no "*" entry, so any other principal may call nothing.
POLICY = """[allow]
"spiffe://example.org/admin" = ["*"]
"dns:reporting.example.org" = ["rpc_package.HelloWorldService/SayHello"]
"cn:hello-client" = ["rpc_package.HelloWorldService/SayHello"]
"""
OK, DENIED = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED
NOT_SPIFFE = "the client certificate's URI SAN is not a SPIFFE ID"
Sans = list[str | x509.GeneralName]


def client_certificate(pki: Pki, directory: Path, common_name: str, sans: Sans) -> dict[str, Path]:
    """A client certificate signed by the dev CA, by the project's own cert code: cert_file and key_file."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    ca_key = serialization.load_pem_private_key((pki.dir / "ca-key.pem").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    cert, key = make_leaf(ca_cert, ca_key, common_name, sans=sans, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    directory.mkdir()
    files = {"cert_file": directory / "client.pem", "key_file": directory / "client-key.pem"}
    write_pair(files["cert_file"], files["key_file"], cert, key)
    return files


async def call_with(pki: Pki, port: int, files: dict[str, Path]) -> grpc.aio.AioRpcError | None:
    async with create_channel(client_settings(pki, port, token=None, **files)) as channel:
        try:
            await say_hello(channel, "cert")
        except grpc.aio.AioRpcError as error:
            return error
    return None


async def test_each_kind_of_name_is_its_own_principal(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(POLICY)
    cases: dict[str, tuple[str, Sans, str, grpc.StatusCode]] = {
        "cn": ("hello-client", [], "cn:hello-client", OK),  # the dev client certificate
        # The finding: a CN spelt like the SPIFFE ID (or the DNS SAN) is a CN, and gets none of its grants.
        "cn-spelt-as-spiffe-id": ("spiffe://example.org/admin", [], "cn:spiffe://example.org/admin", DENIED),
        "cn-spelt-as-dns-san": ("reporting.example.org", [], "cn:reporting.example.org", DENIED),
        "dns-san": ("cn-name", ["Reporting.Example.ORG", "other.example.org"], "dns:reporting.example.org", OK),
        "spiffe-id": ("cn-name", ["spiffe://example.org/admin", "dns.example"], "spiffe://example.org/admin", OK),
        "ip-san-only": ("hello-client", ["10.0.0.1"], "cn:hello-client", OK),  # IP SANs name nobody
    }
    settings = server_settings(pki, mtls=True, auth={"mode": "mtls", "policy_file": tmp_path / "policy.toml"})
    errors = {}
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with running(settings) as built:
            for name, (common_name, sans, _, _) in cases.items():
                files = client_certificate(pki, tmp_path / name, common_name, sans)
                errors[name] = await call_with(pki, built.port, files)
    lines = [e for e in logs if e["event"] == "rpc"]
    seen = {name: (line["principal"], line["code"]) for name, line in zip(cases, lines, strict=True)}
    assert seen == {name: (principal, code.name) for name, (_, _, principal, code) in cases.items()}
    denied = errors["cn-spelt-as-spiffe-id"]
    assert denied is not None
    assert denied.details() == "cn:spiffe://example.org/admin may not call /rpc_package.HelloWorldService/SayHello"


@pytest.mark.parametrize(
    ("common_name", "sans", "message"),
    [
        (
            "spiffe://example.org/admin",
            ["spiffe://example.org/a", "spiffe://example.org/b"],
            "the client certificate has 2 URI SANs: an X.509-SVID has exactly one, its SPIFFE ID",
        ),
        ("cn-name", ["https://example.org/b", "dns.example"], NOT_SPIFFE),
        ("cn-name", ["spiffe://example.org"], NOT_SPIFFE),  # a trust domain, no workload path
        ("cn-name", ["spiffe://example.org/a/../admin"], NOT_SPIFFE),
        ("cn-name", ["spiffe://Example.org/admin"], NOT_SPIFFE),
        (
            "cn-name",
            [x509.DNSName("spiffe://example.org/admin")],  # a DNS SAN spelt as a SPIFFE ID
            "the client certificate's first DNS SAN is not a DNS name",
        ),
    ],
    ids=["cn-and-two-spiffe-uris", "https-uri", "trust-domain-only", "dot-segments", "upper-case-domain", "uri-as-dns"],
)
async def test_a_certificate_that_is_no_svid_is_refused(
    pki: Pki, tmp_path: Path, common_name: str, sans: Sans, message: str
) -> None:
    # Everyone authenticated may call everything: the refusal is the certificate's, not the policy's.
    (tmp_path / "policy.toml").write_text('[allow]\n"*" = ["*"]\n')
    settings = server_settings(pki, mtls=True, auth={"mode": "mtls", "policy_file": tmp_path / "policy.toml"})
    async with running(settings) as built:
        error = await call_with(pki, built.port, client_certificate(pki, tmp_path / "client", common_name, sans))
        refused = built.metrics.registry.get_sample_value("hello_auth_failures_total", {"reason": "bad_identity"})
    assert error is not None
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (error.details() or "").startswith(message)
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "BAD_IDENTITY"
    assert refused == 1
