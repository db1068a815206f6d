"""Authorization: a policy file says which methods each principal may call; others get PERMISSION_DENIED."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from service.client import create_channel, say_hello, say_hello_repeated
from service.errors import ConfigError

from .conftest import Pki, build_hello, client_settings, running, secret, server_settings

ADMIN, READER, OTHER = map(
    secret,
    ("admin-token-0123456789-Kq7Wm2Xp9R", "reader-token-0123456789-Kq7Wm2Xp9R", "other-token-0123456789-Kq7Wm2Xp9R"),
)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"admin:{ADMIN}\nreader:{READER}\nother:{OTHER}\n")
    policy = tmp_path / "policy.toml"
    policy.write_text('[allow]\nadmin = ["*"]\nreader = ["rpc_package.HelloWorldService/SayHello"]\n')
    return tokens, policy


async def test_each_principal_gets_its_grant(pki: Pki, files: tuple[Path, Path]) -> None:
    tokens, policy = files
    async with running(server_settings(pki, auth={"tokens_file": tokens, "policy_file": policy})) as built:
        async with create_channel(client_settings(pki, built.port, token=READER)) as channel:
            assert await say_hello(channel, "r") == "Hello, r!"
            with pytest.raises(grpc.aio.AioRpcError) as error:
                _ = [m async for m in say_hello_repeated(channel, "r", 1)]
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error.value.details() == "reader may not call /rpc_package.HelloWorldService/SayHelloRepeated"
        async with create_channel(client_settings(pki, built.port, token=ADMIN)) as channel:
            assert [m async for m in say_hello_repeated(channel, "a", 1)] == ["Hello, a!"]
        # Not listed and no "*" entry: nothing.
        async with create_channel(client_settings(pki, built.port, token=OTHER)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await say_hello(channel, "o")
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_refused_call_is_logged_with_who_was_refused(pki: Pki, files: tuple[Path, Path]) -> None:
    tokens, policy = files
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with running(server_settings(pki, auth={"tokens_file": tokens, "policy_file": policy})) as built:
            async with create_channel(client_settings(pki, built.port, token=OTHER)) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await say_hello(channel, "o")
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    [line] = [e for e in logs if e["event"] == "rpc"]
    assert (line["code"], line["principal"]) == ("PERMISSION_DENIED", "other")


async def test_star_entry_covers_unlisted_principals(pki: Pki, files: tuple[Path, Path]) -> None:
    tokens, policy = files
    policy.write_text('[allow]\n"*" = ["rpc_package.HelloWorldService/*"]\n')
    async with running(server_settings(pki, auth={"tokens_file": tokens, "policy_file": policy})) as built:
        async with create_channel(client_settings(pki, built.port, token=OTHER)) as channel:
            assert [m async for m in say_hello_repeated(channel, "o", 1)] == ["Hello, o!"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[allow]\nreader = ["rpc_package.HelloWorldService/SayHelo"]\n',
            "'rpc_package.HelloWorldService/SayHelo' is not",
        ),
        ('[allow]\nreader = ["no.Such/*"]\n', "'no.Such/*' is not"),
        ('[allow]\nreader = "*"\n', "reader: expected a list of method patterns"),
        ("allow = [\n", "not valid TOML"),
        ('[deny]\nreader = ["*"]\n', "expected one [allow] table"),
        # Principals no caller can have: each kind has one spelling (README, Authorization).
        ('[allow]\n"spiffe://Example.org/admin" = ["*"]\n', "spiffe://Example.org/admin: not a SPIFFE ID"),
        ('[allow]\n"spiffe://example.org" = ["*"]\n', "spiffe://example.org: not a SPIFFE ID"),
        ('[allow]\n"dns:API.example.org" = ["*"]\n', "dns:API.example.org: dns: needs a lower-case DNS name"),
        ('[allow]\n"uri:https://example.org" = ["*"]\n', "uri:https://example.org: a principal is a token's name"),
        ('[allow]\n"cn:" = ["*"]\n', "cn:: a principal is a token's name (no ':'), a SPIFFE ID"),
    ],
)
async def test_bad_policy_is_a_startup_error(pki: Pki, files: tuple[Path, Path], text: str, problem: str) -> None:
    tokens, policy = files
    policy.write_text(text)
    with pytest.raises(ConfigError) as error:
        await build_hello(server_settings(pki, auth={"tokens_file": tokens, "policy_file": policy}))
    assert error.value.setting == "HELLO_AUTH__POLICY_FILE"
    assert problem in error.value.problem
