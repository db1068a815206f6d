"""Authorization: a policy file says which methods each principal may call; others get PERMISSION_DENIED."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from service.client import create_channel, say_hello, say_hello_repeated
from service.errors import ConfigError

from .conftest import Pki, build_hello, client_settings, running, secret, server_settings

ADMIN, READER, OTHER = map(secret, ("admin-token-0123456789", "reader-token-0123456789", "other-token-0123456789"))


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
    ],
)
async def test_bad_policy_is_a_startup_error(pki: Pki, files: tuple[Path, Path], text: str, problem: str) -> None:
    tokens, policy = files
    policy.write_text(text)
    with pytest.raises(ConfigError) as error:
        await build_hello(server_settings(pki, auth={"tokens_file": tokens, "policy_file": policy}))
    assert error.value.setting == "HELLO_AUTH__POLICY_FILE"
    assert problem in error.value.problem
