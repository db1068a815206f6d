"""The tokens file: what a token must be to be accepted, and the file's format as editors save it."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from service.client import create_channel, say_hello
from service.security.dev_pki import new_token
from service.security.tokens import TokenFileError, parse_tokens

from .conftest import Pki, client_settings, running, secret, server_settings


@pytest.mark.parametrize(
    "token",
    [
        new_token(),  # what make certs writes: 43 characters of base64url
        secrets.token_hex(16),  # openssl rand -hex 16: 32 hex characters, 128 bits
        secrets.token_urlsafe(24),  # 32 characters of base64url
        "3141592653589793238462643383279502884197",  # 40 digits: 133 bits
        "correct-Horse-battery-staple-7410",
    ],
    ids=["make-certs", "hex-32", "base64url-32", "digits-40", "passphrase"],
)
def test_strong_tokens_are_accepted(token: str) -> None:
    assert parse_tokens(f"svc:{secret(token)}\n") == [("svc", token)]


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("Zq9x7Zq9x7Zq9x7Zq9x7Zq9x7Zq9x7Z", "shorter than 32 characters"),
        ("a" * 64, "too weak"),  # one character: no variety
        ("ab" * 20, "too weak"),  # a shorter string repeated
        ("abcdefgh" * 4, "too weak"),
        ("new-token-" + "x" * 30, "too weak"),  # mostly one character: variety 60 bits
        ("31415926535897932384626433832795028841", "too weak"),  # 38 digits: 126 bits
    ],
    ids=["31-characters", "one-character", "ab-repeated", "8-repeated", "mostly-x", "digits-38"],
)
def test_weak_tokens_are_refused_naming_the_principal(token: str, problem: str) -> None:
    with pytest.raises(TokenFileError) as error:
        parse_tokens(f"# ok\nfine:{new_token()}\nreporting:{secret(token)}\n")
    assert str(error.value).startswith(f"line 3 (principal reporting): the token is {problem}")
    assert token not in str(error.value)


def test_an_unnamed_weak_token_is_named_by_its_line_alone() -> None:
    weak = secret("a" * 40)
    with pytest.raises(TokenFileError) as error:
        parse_tokens(f"{weak}\n")
    # Not the digest-derived name (token-1a2b...): for a weak token it would help guess it.
    assert str(error.value).startswith("line 1 (a token without a name): the token is too weak")
    assert "token-" not in str(error.value)


async def test_a_byte_order_mark_is_not_part_of_the_first_name(pki: Pki, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"dev:{pki.token}\n", encoding="utf-8-sig")  # as Notepad saves it
    assert tokens.read_bytes().startswith(b"\xef\xbb\xbfdev:")
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with running(server_settings(pki, auth={"tokens_file": tokens})) as built:
            async with create_channel(client_settings(pki, built.port)) as channel:
                assert await say_hello(channel, "bom") == "Hello, bom!"
    [line] = [e for e in logs if e["event"] == "rpc"]
    assert line["principal"] == "dev"
