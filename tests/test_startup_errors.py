"""Every way an operator can misconfigure hello-server ends start-up with one line on stderr and exit 2 (or 1)."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from service.security.dev_pki import make_ca, make_leaf

from .conftest import Pki
from .processes import BIN, ServerProcess, clean_env, pki_env, run


def _start(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = run([str(BIN / "hello-server"), *args], env, timeout=30)
    return result.returncode, result.stderr


def _assert_one_line(stderr: str, *fragments: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("hello-server: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in stderr


def _write_cert_pair(directory: Path, days: int, start: dt.datetime) -> tuple[Path, Path]:
    ca, ca_key = make_ca()
    cert, key = make_leaf(ca, ca_key, "localhost", sans=["localhost"], days=days, start=start)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.mark.parametrize(
    ("settings", "fragments"),
    [
        (
            {"HELLO_TLS__CERT_FILE": "", "HELLO_TLS__KEY_FILE": ""},
            ["HELLO_TLS__CERT_FILE", "TLS is required", "HELLO_INSECURE=true"],
        ),
        (
            {"HELLO_TLS__CERT_FILE": "/nonexistent/server.pem"},
            ["HELLO_TLS__CERT_FILE", "no such file: /nonexistent/server.pem"],
        ),
        ({"HELLO_TLS__KEY_FILE": ""}, ["HELLO_TLS__KEY_FILE", "is required"]),
        ({"HELLO_AUTH__TOKENS_FILE": ""}, ["HELLO_AUTH__TOKENS_FILE", "is required"]),
        ({"HELLO_PORT": "not-a-port"}, ["HELLO_PORT", "expected a whole number from 0 to 65535", "'not-a-port'"]),
        ({"HELLO_PORT": "70000"}, ["HELLO_PORT", "'70000': expected a whole number from 0 to 65535"]),
        ({"HELLO_INSECURE": "maybe"}, ["HELLO_INSECURE", "expected true or false"]),
        ({"HELLO_LOG__LEVEL": "loud"}, ["HELLO_LOG__LEVEL", "one of debug, info, warning, error"]),
        (
            {"HELLO_SHUTDOWN_GRACE_SECONDS": "-1"},
            ["HELLO_SHUTDOWN_GRACE_SECONDS", "expected a number at least 0"],
        ),
        (
            {
                "HELLO_INSECURE": "true",
                "HELLO_TLS__CERT_FILE": "",
                "HELLO_TLS__KEY_FILE": "",
                "HELLO_TLS__CLIENT_CA_FILE": "{ca}",
            },
            ["HELLO_TLS__CLIENT_CA_FILE", "mutual TLS needs HELLO_TLS__CERT_FILE"],
        ),
        ({"HELLO_TLS__KEY_FILE": "{client_key}"}, ["HELLO_TLS__KEY_FILE", "does not match the certificate"]),
        ({"HELLO_TLS__CERT_FILE": "{token_file}"}, ["HELLO_TLS__CERT_FILE", "holds no PEM certificate"]),
        ({"HELLO_TLS__KEY_FILE": "{ca}"}, ["HELLO_TLS__KEY_FILE", "holds no unencrypted PEM private key"]),
        (
            {"HELLO_TLS__CLIENT_CA_FILE": "{token_file}"},
            ["HELLO_TLS__CLIENT_CA_FILE", "holds no PEM certificate"],
        ),
        ({"HELLO_AUTH__MODE": "mtls"}, ["HELLO_AUTH__MODE", "mtls needs HELLO_TLS__CLIENT_CA_FILE"]),
        ({"HELLO_AUTH__MODE": "password"}, ["HELLO_AUTH__MODE", "one of token, mtls, token+mtls"]),
        ({"HELLO_AUTH__RELOAD_SECONDS": "-5"}, ["HELLO_AUTH__RELOAD_SECONDS", "at least 0"]),
        ({"HELLO_AUTH__POLICY_FILE": "{token_file}"}, ["HELLO_AUTH__POLICY_FILE", "not valid TOML"]),
        ({"HELLO_MAX_MESSAGE_BYTES": "10"}, ["HELLO_MAX_MESSAGE_BYTES", "from 1024 to 67108864"]),
        ({"HELLO_MAX_NAME_LENGTH": "0"}, ["HELLO_MAX_NAME_LENGTH", "from 1 to 65536"]),
        ({"HELLO_HEALTH_PORT": "none"}, ["HELLO_HEALTH_PORT: 'none': expected a whole number from 0 to 65535, or off"]),
        ({"HELLO_WORKERS": "two"}, ["HELLO_WORKERS: 'two': expected a whole number from 1 to 64, or auto"]),
        ({"HELLO_LOG__LEVELL": "debug"}, ["HELLO_LOG__LEVELL: not a setting; did you mean HELLO_LOG__LEVEL?"]),
        (
            {"HELLO_AUTH__POLICY_FILE": "config/nope.toml"},
            ["HELLO_AUTH__POLICY_FILE: no such file: config/nope.toml", "resolved against the working directory"],
        ),
        ({"HELLO_LOOP": "trio"}, ["HELLO_LOOP", "one of auto, uvloop, asyncio"]),
        (
            {"HELLO_HEALTH__MAX_SERVICE_NAME_LENGTH": "20"},
            [
                "HELLO_HEALTH__MAX_SERVICE_NAME_LENGTH: 20 is shorter than rpc_package.HelloWorldService (29),"
                " which HELLO_APP serves"
            ],
        ),
    ],
    ids=[
        "no-tls",
        "missing-cert",
        "cert-without-key",
        "no-tokens-file",
        "port-not-a-number",
        "port-out-of-range",
        "insecure-not-a-bool",
        "bad-log-level",
        "negative-grace",
        "client-ca-without-cert",
        "key-mismatch",
        "cert-not-pem",
        "key-not-pem",
        "client-ca-not-pem",
        "mtls-without-client-ca",
        "unknown-auth-mode",
        "negative-reload",
        "policy-not-toml",
        "message-limit-too-small",
        "name-limit-zero",
        "health-port-none",
        "workers-two",
        "nested-setting-misspelled",
        "relative-path",
        "unknown-loop",
        "health-name-limit-below-a-service",
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(pki: Pki, settings: dict[str, str], fragments: list[str]) -> None:
    files = {"ca": pki.ca, "client_key": pki.client_key, "token_file": pki.token_file}
    env = pki_env(pki, **{key: value.format(**files) for key, value in settings.items()})
    env = {key: value for key, value in env.items() if value != ""}
    code, stderr = _start(env)
    _assert_one_line(stderr, *fragments)
    assert pki.token not in stderr
    assert code == 2


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "no tokens in the file"),
        ("# only a comment\n\n", "no tokens in the file"),
        ("dev:Zq9x7\n", "line 1 (principal dev): the token is shorter than 32 characters"),
        # 38 digits: 126 bits, short of 128.
        ("reporting:31415926535897932384626433832795028841\n", "line 1 (principal reporting): the token is too weak"),
        ("31415926535897932384626433832795028841\n", "line 1 (a token without a name): the token is too weak"),
        ("# c\ndev:Wq9x7 Wq9x7 Wq9x7 Wq9x7\n", "line 2 (principal dev): the token contains whitespace"),
        (":0123456789abcdefXYZ\n", "line 1: the name before ':' is empty"),
        (
            "a:0123456789abcdefXYZ-Kq7Wm2Xp9Rz4\nb:0123456789abcdefXYZ-Kq7Wm2Xp9Rz4\n",
            "line 2 (principal b): the same token as line 1",
        ),
    ],
    ids=["empty", "comments-only", "short", "weak", "weak-unnamed", "whitespace", "empty-name", "duplicate"],
)
def test_bad_tokens_file(pki: Pki, tmp_path: Path, content: str, fragment: str) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(content)
    code, stderr = _start(pki_env(pki, HELLO_AUTH__TOKENS_FILE=tokens))
    _assert_one_line(stderr, "HELLO_AUTH__TOKENS_FILE", fragment)
    assert code == 2
    for secret in ("Zq9x7", "0123456789abcdefXYZ", "Wq9x7", "31415926535897932384626433832795028841"):
        assert secret not in stderr


def test_expired_certificate(pki: Pki, tmp_path: Path) -> None:
    cert, key = _write_cert_pair(tmp_path, days=10, start=dt.datetime.now(dt.UTC) - dt.timedelta(days=11))
    code, stderr = _start(pki_env(pki, HELLO_TLS__CERT_FILE=cert, HELLO_TLS__KEY_FILE=key))
    _assert_one_line(stderr, "HELLO_TLS__CERT_FILE", "the certificate expired on")
    assert code == 2


def test_not_yet_valid_certificate(pki: Pki, tmp_path: Path) -> None:
    cert, key = _write_cert_pair(tmp_path, days=30, start=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    code, stderr = _start(pki_env(pki, HELLO_TLS__CERT_FILE=cert, HELLO_TLS__KEY_FILE=key))
    _assert_one_line(stderr, "HELLO_TLS__CERT_FILE", "the certificate is not valid before")
    assert code == 2


def test_missing_env_file(pki: Pki, tmp_path: Path) -> None:
    code, stderr = _start(pki_env(pki), "--env-file", str(tmp_path / "nope.env"))
    _assert_one_line(stderr, "no such file", "nope.env")
    assert code == 2


def test_missing_env_file_from_environment(pki: Pki, tmp_path: Path) -> None:
    code, stderr = _start(pki_env(pki, HELLO_ENV_FILE=tmp_path / "nope.env"))
    _assert_one_line(stderr, "no such file")
    assert code == 2


@pytest.fixture
def busy_port() -> object:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_in_use(pki: Pki, busy_port: int) -> None:
    code, stderr = _start(pki_env(pki, HELLO_PORT=busy_port))
    _assert_one_line(stderr, "HELLO_PORT", f"cannot listen on 127.0.0.1:{busy_port}", "Address already in use")
    assert code == 1


def test_every_problem_is_a_line_of_its_own(pki: Pki) -> None:
    env = pki_env(pki, HELLO_HEALTH_PORT="none", HELLO_WORKERS="two", HELLO_LOG__FORMAT="xml")
    code, stderr = _start(env)
    assert code == 2
    assert sorted(stderr.splitlines()) == [
        "hello-server: HELLO_HEALTH_PORT: 'none': expected a whole number from 0 to 65535, or off",
        "hello-server: HELLO_LOG__FORMAT: 'xml': expected one of json, console",
        "hello-server: HELLO_WORKERS: 'two': expected a whole number from 1 to 64, or auto",
    ]


def test_a_misspelled_variable_is_named_with_the_closest_setting(pki: Pki, tmp_path: Path) -> None:
    env_file = tmp_path / "server.env"
    env_file.write_text("HELLO_LOG_LEVEL=debug\n")
    # HELLO_APP is a setting (uvicorn-style app string); HELLO_PROT is a typo of HELLO_PORT.
    env = pki_env(pki, HELLO_PROT="50052", HELLO_APP="service.hello:register", HELLO_CLIENT__TARGT="x:1")
    server = ServerProcess([str(BIN / "hello-server"), "--env-file", str(env_file)], env)
    try:
        server.serving_port()
    finally:
        server.stop()
    warnings = sorted(e["event"] for e in server.events if e.get("level") == "warning")
    assert warnings == [
        "HELLO_CLIENT__TARGT is not a setting and is ignored; did you mean HELLO_CLIENT__TARGET?",
        "HELLO_LOG_LEVEL is not a setting and is ignored; did you mean HELLO_LOG__LEVEL?",
        "HELLO_PROT is not a setting and is ignored; did you mean HELLO_PORT?",
    ]


def test_the_client_names_its_settings_the_same_way(pki: Pki) -> None:
    env = clean_env(HELLO_CLIENT__TIMEOUT="soon", HELLO_CLIENT__PLAINTEXT="sometimes", HELLO_CLIENT__TARGT="x:1")
    result = run([str(BIN / "hello-client"), "health"], env, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "hello-client: warning: HELLO_CLIENT__TARGT is not a setting and is ignored; "
        "did you mean HELLO_CLIENT__TARGET?",
        "hello-client: HELLO_CLIENT__TIMEOUT: 'soon': expected a number more than 0",
        "hello-client: HELLO_CLIENT__PLAINTEXT: 'sometimes': expected true or false",
    ]
