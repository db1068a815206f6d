"""Token rotation: the tokens file is re-read when it changes; a bad replacement keeps the last good set."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from service.client import create_channel, say_hello
from service.server.factory import BuiltServer

from .conftest import Pki, client_settings, running, secret, server_settings

OLD = secret("old-token-0123456789abcdef-Kq7Wm2")
NEW = secret("new-token-0123456789abcdef-Kq7Wm2")
WEAK = secret("new-token-" + "x" * 30)  # 40 characters, mostly one


def replace(path: Path, text: str) -> None:
    """Swap the file in one step, as a Kubernetes Secret volume does."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    os.replace(staged, path)


async def status_with(pki: Pki, built: BuiltServer, token: str) -> grpc.StatusCode:
    async with create_channel(client_settings(pki, built.port, token=token)) as channel:
        try:
            await say_hello(channel, "rotation")
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"svc:{OLD}\n")
    return path


def settings_for(pki: Pki, tokens: Path, reload_seconds: float = 0) -> object:
    return server_settings(pki, auth={"tokens_file": tokens, "reload_seconds": reload_seconds})


async def test_added_and_removed_tokens_take_effect_without_restart(pki: Pki, tokens: Path) -> None:
    with capture_logs() as logs:
        async with running(settings_for(pki, tokens)) as built:
            assert await status_with(pki, built, OLD) == grpc.StatusCode.OK
            assert await status_with(pki, built, NEW) == grpc.StatusCode.UNAUTHENTICATED
            replace(tokens, f"svc:{NEW}\n")
            assert await status_with(pki, built, NEW) == grpc.StatusCode.OK
            assert await status_with(pki, built, OLD) == grpc.StatusCode.UNAUTHENTICATED
    [reloaded] = [e for e in logs if e["event"] == "tokens file reloaded"]
    assert reloaded["tokens"] == 1
    assert OLD not in repr(logs)
    assert NEW not in repr(logs)


@pytest.mark.parametrize("damage", ["empty", "malformed", "deleted", "weak"])
async def test_bad_replacement_keeps_the_last_good_tokens(pki: Pki, tokens: Path, damage: str) -> None:
    replacement = {"empty": "", "malformed": f"svc:{NEW} with spaces\n", "weak": f"# rotated\nsvc:{OLD}\nnew:{WEAK}\n"}
    with capture_logs() as logs:
        async with running(settings_for(pki, tokens)) as built:
            if damage == "deleted":
                tokens.unlink()
            else:
                replace(tokens, replacement[damage])
            assert await status_with(pki, built, OLD) == grpc.StatusCode.OK
            if damage == "weak":
                assert await status_with(pki, built, WEAK) == grpc.StatusCode.UNAUTHENTICATED
            assert await status_with(pki, built, OLD) == grpc.StatusCode.OK
            # Once the file is good again, it is used.
            replace(tokens, f"svc:{NEW}\n")
            assert await status_with(pki, built, NEW) == grpc.StatusCode.OK
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1  # reported once, not at every call
    assert errors[0]["event"] == "tokens file rejected; keeping the last good tokens"
    if damage == "weak":
        assert errors[0]["problem"].startswith(
            "line 3 (principal new): the token is too weak; a token needs at least 32"
        )
    assert NEW not in repr(logs)
    assert WEAK not in repr(logs)


async def test_changes_are_checked_at_most_every_reload_interval(pki: Pki, tokens: Path) -> None:
    async with running(settings_for(pki, tokens, reload_seconds=3600)) as built:
        assert await status_with(pki, built, OLD) == grpc.StatusCode.OK
        replace(tokens, f"svc:{NEW}\n")
        # Within the interval the old set stays in force: the bound is the interval, documented.
        assert await status_with(pki, built, OLD) == grpc.StatusCode.OK
