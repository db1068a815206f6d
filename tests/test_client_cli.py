"""hello-client: prints exactly the reply, or one line a person understands; exit 0, 1 (call failed) or 2 (usage)."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
from pathlib import Path
from types import TracebackType

import pytest

from service.server.factory import BuiltServer

from .conftest import Pki, running, server_settings
from .processes import BIN, ServerProcess, clean_env, pki_env, run


async def hello_client(*args: str | Path, **env: object) -> tuple[int, str, str]:
    # In a thread: the server under test runs on this event loop and must keep answering.
    result = await asyncio.to_thread(run, [str(BIN / "hello-client"), *map(str, args)], clean_env(**env), 30)
    return result.returncode, result.stdout, result.stderr


def _args(pki: Pki, port: int, *extra: str | Path) -> list[str | Path]:
    # 127.0.0.1, where the test servers listen (localhost would also try ::1, where nothing does).
    return ["--target", f"127.0.0.1:{port}", "--ca", pki.ca, "--token-file", pki.token_file, *extra]


def _one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _failure(stderr: str) -> str:
    """The one error line without its request id suffix, after checking the suffix is there."""
    line = _one_line(stderr)
    match = re.fullmatch(r"(.*) \[request id ([0-9a-f]{32})\]", line)
    assert match, line
    return match.group(1)


async def test_say_prints_exactly_the_reply(server: BuiltServer, pki: Pki) -> None:
    code, out, err = await hello_client(*_args(pki, server.port), "say", "Ada Lovelace")
    assert (code, out, err) == (0, "Hello, Ada Lovelace!\n", "")


async def test_settings_from_environment(server: BuiltServer, pki: Pki) -> None:
    code, out, _ = await hello_client(
        "say",
        "env",
        HELLO_CLIENT__TARGET=f"127.0.0.1:{server.port}",
        HELLO_CLIENT__CA_FILE=pki.ca,
        HELLO_CLIENT__TOKEN=pki.token,
    )
    assert (code, out) == (0, "Hello, env!\n")


async def test_health(server: BuiltServer, pki: Pki) -> None:
    code, out, _ = await hello_client("--target", f"localhost:{server.port}", "--ca", pki.ca, "health")
    assert (code, out) == (0, "SERVING\n")


async def test_health_of_unknown_service_fails(server: BuiltServer, pki: Pki) -> None:
    code, _, err = await hello_client("--target", f"localhost:{server.port}", "--ca", pki.ca, "health", "no.Such")
    assert code == 1
    assert _failure(err).endswith("(NOT_FOUND)")


async def test_wrong_token(server: BuiltServer, pki: Pki) -> None:
    secret = "a-wrong-token-of-some-length"
    code, out, err = await hello_client(
        "--target", f"localhost:{server.port}", "--ca", pki.ca, "--token", secret, "say", "x"
    )
    assert (code, out) == (1, "")
    assert _failure(err) == "hello-client: server rejected the token: the bearer token is not valid (UNAUTHENTICATED)"
    assert secret not in err


async def test_no_token(server: BuiltServer, pki: Pki) -> None:
    code, _, err = await hello_client("--target", f"localhost:{server.port}", "--ca", pki.ca, "say", "x")
    assert code == 1
    assert "missing credentials" in _failure(err)
    assert _failure(err).endswith(": pass --token-file FILE (or HELLO_CLIENT__TOKEN_FILE) (UNAUTHENTICATED)")


async def test_untrusted_server_certificate(server: BuiltServer, pki: Pki, other_pki: Pki) -> None:
    code, _, err = await hello_client(*_args(pki, server.port, "--ca", other_pki.ca), "say", "x")
    assert code == 1
    assert _failure(err) == (
        f"hello-client: 127.0.0.1:{server.port}: TLS handshake failed: certificate not trusted: "
        "pass the CA that signed it with --ca (UNAVAILABLE)"
    )


async def test_certificate_for_another_host(pki: Pki) -> None:
    # The dev certificate names localhost, 127.0.0.1 and ::1; 127.0.0.2 is the same machine under another name.
    async with running(server_settings(pki, host="127.0.0.2")) as built:
        code, _, err = await hello_client(*_args(pki, built.port, "--target", f"127.0.0.2:{built.port}"), "say", "x")
    assert code == 1
    assert _failure(err) == (
        f"hello-client: 127.0.0.2:{built.port}: TLS handshake failed: "
        "the server's certificate is not for this host (UNAVAILABLE)"
    )


async def test_mtls_without_client_certificate(mtls_server: BuiltServer, pki: Pki) -> None:
    code, _, err = await hello_client(*_args(pki, mtls_server.port), "say", "x")
    assert code == 1
    assert _failure(err) == (
        f"hello-client: 127.0.0.1:{mtls_server.port}: TLS handshake failed: "
        "the server requires a client certificate: pass --cert and --key (UNAVAILABLE)"
    )


async def test_mtls_with_a_certificate_from_another_ca(mtls_server: BuiltServer, pki: Pki, other_pki: Pki) -> None:
    args = _args(pki, mtls_server.port, "--cert", other_pki.client, "--key", other_pki.client_key)
    code, _, err = await hello_client(*args, "say", "x")
    assert code == 1
    assert _failure(err) == (
        f"hello-client: 127.0.0.1:{mtls_server.port}: TLS handshake failed: "
        "the server refused the client certificate: it must be signed by the server's client CA, "
        "unexpired, and for client use (UNAVAILABLE)"
    )


class _CertificateRecorder:
    """A TLS server that notes the client certificate each connection shows (None: none), then closes it."""

    def __init__(self, pki: Pki) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(pki.server, pki.server_key)
        self._context.load_verify_locations(pki.ca)
        self._context.verify_mode = ssl.CERT_OPTIONAL  # a handshake with or without one, to see which
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # how soon the thread sees it is asked to stop
        self.port: int = self._listener.getsockname()[1]
        self.shown: list[bytes | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(5)
            try:
                with self._context.wrap_socket(connection, server_side=True) as tls:
                    self.shown.append(tls.getpeercert(binary_form=True))
            except OSError:
                connection.close()

    def __enter__(self) -> _CertificateRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()


async def test_the_diagnosis_shows_the_client_certificate_to_no_one(pki: Pki) -> None:
    # A server that closes every connection after the handshake, as one refusing the certificate does.
    with _CertificateRecorder(pki) as recorder:
        code, _, err = await hello_client(
            *_args(pki, recorder.port, "--cert", pki.client, "--key", pki.client_key), "say", "x"
        )
    assert code == 1
    assert _failure(err) == (
        f"hello-client: 127.0.0.1:{recorder.port}: TLS handshake failed: "
        "the server refused the client certificate: it must be signed by the server's client CA, "
        "unexpired, and for client use (UNAVAILABLE)"
    )
    # grpc presents the certificate to the server it verified; the diagnosis's handshake after it, none.
    certificate = ssl.PEM_cert_to_DER_cert(pki.client.read_text())
    assert certificate in recorder.shown
    assert recorder.shown.count(None) == 1
    assert set(recorder.shown) == {certificate, None}


async def test_plaintext_to_the_tls_port(server: BuiltServer) -> None:
    code, _, err = await hello_client("--plaintext", "--target", f"127.0.0.1:{server.port}", "health")
    assert code == 1
    assert (
        _failure(err) == f"hello-client: 127.0.0.1:{server.port}: this port speaks TLS: drop --plaintext (UNAVAILABLE)"
    )


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("localhost", "'localhost' has no port: write host:port, e.g. localhost:50051 or [::1]:50051"),
        ("::1", "'::1' has no port: write host:port, e.g. localhost:50051 or [::1]:50051"),
        ("localhost:http", "'localhost:http': the port must be a number from 1 to 65535"),
        ("localhost:70000", "'localhost:70000': the port must be a number from 1 to 65535"),
    ],
)
async def test_a_target_without_a_good_port_is_a_usage_error(target: str, problem: str) -> None:
    code, _, err = await hello_client("--target", target, "say", "x")
    assert (code, _one_line(err)) == (2, f"hello-client: HELLO_CLIENT__TARGET: {problem}")


async def test_mtls_with_client_certificate(mtls_server: BuiltServer, pki: Pki) -> None:
    args = _args(pki, mtls_server.port, "--cert", pki.client, "--key", pki.client_key)
    code, out, _ = await hello_client(*args, "say", "mtls")
    assert (code, out) == (0, "Hello, mtls!\n")


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: nothing answers there
        code, _, err = await hello_client("--target", f"127.0.0.1:{port}", "--timeout", "3", "say", "x")
    assert code == 1
    assert _failure(err) == f"hello-client: 127.0.0.1:{port}: cannot connect: connection refused (UNAVAILABLE)"


async def test_invalid_argument_names_the_field(server: BuiltServer, pki: Pki) -> None:
    code, _, err = await hello_client(*_args(pki, server.port), "say", "")
    assert code == 1
    assert _failure(err) == "hello-client: invalid argument: name: must not be empty (INVALID_ARGUMENT)"


async def test_rate_limited_says_when_to_retry(pki: Pki) -> None:
    async with running(server_settings(pki, rate_limit={"per_second": 0.1, "burst": 1})) as built:
        assert (await hello_client(*_args(pki, built.port), "say", "first"))[0] == 0
        # The next token is 10 s away, past the 5 s deadline: the server says do not retry, and when.
        code, _, err = await hello_client(*_args(pki, built.port), "say", "second")
    assert code == 1
    line = _failure(err)
    match = re.fullmatch(
        r"hello-client: call failed: rate limit of 0\.1 calls per second exceeded; retry after [0-9.]+ s "
        r"\(RESOURCE_EXHAUSTED; retry after (\d+) ms\)",
        line,
    )
    assert match, line
    assert 5000 < int(match.group(1)) <= 10_000


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--ca", "/nonexistent/ca.pem", "say", "x"], "HELLO_CLIENT__CA_FILE"),
        (["--timeout", "0", "say", "x"], "HELLO_CLIENT__TIMEOUT"),
        (["--cert", "{client}", "say", "x"], "the client certificate needs its key"),
        (["--token-file", "{ca}", "say", "x"], "HELLO_CLIENT__TOKEN_FILE"),
    ],
    ids=["missing-ca", "zero-timeout", "cert-without-key", "token-file-not-tokens"],
)
async def test_bad_client_settings_exit_2(pki: Pki, args: list[str], fragment: str) -> None:
    files = {"client": pki.client, "ca": pki.ca}
    code, _, err = await hello_client(*[arg.format(**files) for arg in args])
    assert code == 2
    assert fragment in _one_line(err)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HELLO_CLIENT__RETRY__MAX_ATTEMPTS", "6"),
        ("HELLO_CLIENT__RETRY__THROTTLE_TOKENS", "0"),
        ("HELLO_CLIENT__EJECTION__FAILURE_PERCENT", "101"),
    ],
)
async def test_bad_resilience_setting_exit_2(variable: str, value: str) -> None:
    code, _, err = await hello_client("say", "x", **{variable: value})
    assert code == 2
    assert _one_line(err).startswith(f"hello-client: {variable}: ")


@pytest.mark.parametrize("args", [[], ["say"], ["shout", "x"], ["--timeout", "soon", "say", "x"]])
async def test_bad_usage_exit_2(args: list[str]) -> None:
    code, _, err = await hello_client(*args)
    assert code == 2
    assert "usage: hello-client" in err


async def test_one_env_file_for_server_and_client(pki: Pki, tmp_path: Path) -> None:
    """config/dev.env holds both programs' settings; neither trips over the other's."""
    env_file = tmp_path / "both.env"
    env_file.write_text(
        "\n".join(
            [
                "HELLO_HOST=127.0.0.1",
                "HELLO_PORT=0",
                "HELLO_HEALTH_PORT=0",
                "HELLO_METRICS_PORT=0",
                f"HELLO_TLS__CERT_FILE={pki.server}",
                f"HELLO_TLS__KEY_FILE={pki.server_key}",
                f"HELLO_AUTH__TOKENS_FILE={pki.token_file}",
                "HELLO_LOG__FORMAT=json",
                "HELLO_CLIENT__TARGET=placeholder:1",
                f"HELLO_CLIENT__CA_FILE={pki.ca}",
                f"HELLO_CLIENT__TOKEN_FILE={pki.token_file}",
                "HELLO_CLIENT__TIMEOUT=5",
            ]
        )
    )
    server = ServerProcess([str(BIN / "hello-server"), "--env-file", str(env_file)], clean_env())
    try:
        port = server.serving_port()
        code, out, err = await hello_client("--target", f"localhost:{port}", "say", "both", HELLO_ENV_FILE=env_file)
        assert (code, out, err) == (0, "Hello, both!\n", "")
    finally:
        server.stop()


async def test_server_env_file_is_overridden_by_environment(pki: Pki, tmp_path: Path) -> None:
    env_file = tmp_path / "server.env"
    env_file.write_text("HELLO_PORT=1\nHELLO_LOG__FORMAT=console\n")
    server = ServerProcess([str(BIN / "hello-server")], pki_env(pki, HELLO_ENV_FILE=env_file))
    try:
        assert server.serving_port() != 1  # HELLO_PORT=0 from the environment won
    finally:
        server.stop()
