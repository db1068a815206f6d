"""Refusals carry google.rpc details and grpc's retry pushback, decoded by grpcio-status and shown by grpcurl."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from service.generated.rpc_package import helloworld_pb2 as pb
from service.generated.rpc_package import helloworld_pb2_grpc
from service.security.tokens import parse_tokens
from service.status_details import DOMAIN

from .conftest import Pki, running, secret, server_settings
from .test_grpcurl import grpcurl, tls_args
from .test_rate_limits import BlockingHello


@asynccontextmanager
async def plain_stub(
    pki: Pki, port: int, token: str | None
) -> AsyncIterator[helloworld_pb2_grpc.HelloWorldServiceStub]:
    """A stub on a bare grpc channel: no service config of ours, so nothing is retried."""
    credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes())
    options = [("grpc.ssl_target_name_override", "localhost"), ("grpc.enable_retries", 0)]
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
        stub = helloworld_pb2_grpc.HelloWorldServiceStub(channel)
        stub.metadata = (("authorization", f"Bearer {token}"),) if token else ()  # type: ignore[attr-defined]
        yield stub


async def refusal(call: Callable[[], Awaitable[Any]]) -> tuple[grpc.aio.AioRpcError, dict[str, Any], list[Any]]:
    """The error, its trailers and its details decoded with grpcio-status (each detail's message unpacked)."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call()
    error = raised.value
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin"
    assert (status.code, status.message) == (error.code().value[0], error.details())
    details = []
    for packed in status.details:
        kind = {
            "google.rpc.RetryInfo": error_details_pb2.RetryInfo,
            "google.rpc.QuotaFailure": error_details_pb2.QuotaFailure,
            "google.rpc.BadRequest": error_details_pb2.BadRequest,
            "google.rpc.ErrorInfo": error_details_pb2.ErrorInfo,
        }[packed.TypeName()]
        detail = kind()
        packed.Unpack(detail)
        details.append(detail)
    return error, dict(list(error.trailing_metadata() or ())), details


def say(stub: Any, name: str = "x", timeout: float = 5) -> Callable[[], Awaitable[Any]]:
    return lambda: stub.SayHello(pb.HelloRequest(name=name), timeout=timeout, metadata=stub.metadata)


async def test_rate_limit_says_when_and_whose_quota(pki: Pki) -> None:
    principal = parse_tokens(pki.token_file.read_text())[0][0]
    async with running(server_settings(pki, rate_limit={"per_second": 0.5, "burst": 1})) as built:
        async with plain_stub(pki, built.port, pki.token) as stub:
            await say(stub)()
            error, trailers, (retry, quota) = await refusal(say(stub))
            # A caller whose deadline ends before the token is back is told not to retry: grpc
            # would wait out the pushback and end the call DEADLINE_EXCEEDED, without these details.
            _, short_trailers, short_details = await refusal(say(stub, timeout=1))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details().startswith("rate limit of 0.5 calls per second exceeded; retry after ")
    delay_ms = retry.retry_delay.ToMilliseconds()
    assert 1000 < delay_ms <= 2000
    assert int(trailers["grpc-retry-pushback-ms"]) == delay_ms
    assert [(v.subject, v.description) for v in quota.violations] == [
        (f"principal:{principal}", "0.5 calls per second")
    ]
    assert "x-request-id" in trailers  # the layers' trailers are kept
    assert float(trailers["retry-after"]) == pytest.approx(delay_ms / 1000, abs=0.002)  # deprecated, one release
    assert short_trailers["grpc-retry-pushback-ms"] == "-1"
    assert isinstance(short_details[0], error_details_pb2.RetryInfo)


async def test_concurrency_cap_says_do_not_retry(pki: Pki) -> None:
    servicer = BlockingHello()
    async with running(server_settings(pki, rate_limit={"max_concurrent_calls": 1}), servicer) as built:
        async with plain_stub(pki, built.port, pki.token) as stub:
            held = asyncio.ensure_future(say(stub, "held")())
            while servicer.entered < 1:  # noqa: ASYNC110 - the call reaches the handler within a few loop turns
                await asyncio.sleep(0)
            error, trailers, details = await refusal(say(stub))
            servicer.release.set()
            await held
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailers["grpc-retry-pushback-ms"] == "-1"
    (quota,) = details
    assert [(v.subject, v.description) for v in quota.violations] == [("server", "at most 1 calls in flight")]


@pytest.mark.parametrize(
    ("name", "field", "rule"),
    [
        ("", "name", "must not be empty"),
        ("a\u200bb", "name", "must not contain control or format characters (U+200B at position 1)"),
    ],
)
async def test_invalid_argument_names_the_field_and_the_rule(pki: Pki, name: str, field: str, rule: str) -> None:
    async with running(server_settings(pki)) as built:
        async with plain_stub(pki, built.port, pki.token) as stub:
            error, trailers, details = await refusal(say(stub, name))
            repeated = stub.SayHelloRepeated(pb.SayHelloRepeatedRequest(name="a", count=0), metadata=stub.metadata)
            count_error, _, count_details = await refusal(lambda: repeated.read())
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {rule}")
    (bad,) = details
    assert [(v.field, v.description) for v in bad.field_violations] == [(field, rule)]
    assert "grpc-retry-pushback-ms" not in trailers
    assert count_error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in count_details[0].field_violations] == [("count", "must be 1 to 100")]


WRONG = secret("wrong-token-for-details-0123456789")
CALLER = secret("caller-token-for-details-0123456789")


@pytest.mark.parametrize(("token", "reason"), [(None, "MISSING"), (WRONG, "INVALID"), ("", "MALFORMED")])
async def test_unauthenticated_says_the_reason_never_the_token(pki: Pki, token: str | None, reason: str) -> None:
    async with running(server_settings(pki)) as built:
        async with plain_stub(pki, built.port, token) as stub:
            if token == "":
                stub.metadata = (("authorization", "Basic abc"),)  # type: ignore[attr-defined]
            error, trailers, details = await refusal(say(stub))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    (info,) = details
    assert (info.reason, info.domain) == (reason, DOMAIN)
    assert WRONG not in repr(trailers)


async def test_permission_denied_says_the_reason(pki: Pki, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[allow]\nnobody = ["*"]\n')
    async with running(server_settings(pki, auth={"tokens_file": pki.token_file, "policy_file": policy})) as built:
        async with plain_stub(pki, built.port, pki.token) as stub:
            denied, _, (info,) = await refusal(say(stub))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (info.reason, info.domain) == ("DENIED", DOMAIN)


async def test_failed_auth_throttle_says_when_and_do_not_retry(pki: Pki) -> None:
    settings = server_settings(pki, rate_limit={"auth_failure_burst": 1, "auth_failures_per_second": 0.1})
    async with running(settings) as built:
        async with plain_stub(pki, built.port, None) as stub:
            await refusal(say(stub))  # the one failure the bucket allows
            error, trailers, details = await refusal(say(stub))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailers["grpc-retry-pushback-ms"] == "-1"
    info, retry = details
    assert info.reason == "THROTTLED"
    assert 5000 < retry.retry_delay.ToMilliseconds() <= 10_000


def grpcurl_details(err: str) -> list[dict[str, Any]]:
    """The details grpcurl printed, each as JSON on a line of its own: "  1)\t{...}"."""
    return [json.loads(line.split(")", 1)[1]) for line in err.splitlines() if line.strip()[:2] in ("1)", "2)")]


async def test_grpcurl_shows_the_details(pki: Pki, tmp_path: Path) -> None:
    # grpcurl learns the detail types as it learns the service's, through reflection.
    method = "rpc_package.HelloWorldService/SayHello"
    async with running(server_settings(pki)) as built:
        address = f"127.0.0.1:{built.port}"
        _, _, invalid = await grpcurl(*tls_args(pki, token=pki.token), "-d", '{"name": ""}', address, method)
        reflect = ["-reflect-header", f"authorization: Bearer {pki.token}"]
        _, _, missing = await grpcurl(*tls_args(pki), *reflect, "-d", '{"name": "x"}', address, method)
    # The rate limit is per principal: reflection under one, the limited calls under another.
    tokens = tmp_path / "tokens"
    tokens.write_text(f"reflector:{pki.token}\ncaller:{CALLER}\n")
    settings = server_settings(pki, auth={"tokens_file": tokens}, rate_limit={"per_second": 0.5, "burst": 1})
    async with running(settings) as built:
        async with plain_stub(pki, built.port, CALLER) as stub:
            await say(stub)()
        rpc_header = ["-rpc-header", f"authorization: Bearer {CALLER}"]
        address = f"127.0.0.1:{built.port}"
        _, _, limited = await grpcurl(*tls_args(pki), *reflect, *rpc_header, "-d", '{"name": "x"}', address, method)
    assert "Message: name: must not be empty" in invalid
    assert grpcurl_details(invalid) == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "field_violations": [{"field": "name", "description": "must not be empty"}],
        }
    ]
    assert grpcurl_details(missing) == [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "MISSING", "domain": DOMAIN}
    ]
    assert "Code: ResourceExhausted" in limited
    retry, quota = grpcurl_details(limited)
    assert retry["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
    assert 1.0 < float(retry["retry_delay"].rstrip("s")) <= 2.0
    assert quota["violations"] == [{"subject": "principal:caller", "description": "0.5 calls per second"}]
