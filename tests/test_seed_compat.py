"""Wire compatibility: the seed article's own proto and client code talk to our server.

The stubs are generated from the article's proto text, not ours, so a change to our proto that
breaks the wire (a renamed package, service, method, message or field number) fails here; buf
breaking (tests/test_buf.py) checks the same thing statically.
The proto is laid out as rpc_package/helloworld.proto so that the generated code imports as
``rpc_package.helloworld_pb2``, which is what the article's client imports.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

from service.server.factory import BuiltServer

from .conftest import Pki
from .processes import BIN, ServerProcess, clean_env, pki_env, run

SEED = Path(__file__).with_name("seed")


def _seed_stubs(directory: Path) -> None:
    package = directory / "rpc_package"
    package.mkdir()
    shutil.copy(SEED / "helloworld.proto", package / "helloworld.proto")
    args = ["protoc", f"-I{directory}", f"--python_out={directory}", f"--grpc_python_out={directory}"]
    assert protoc.main([*args, str(package / "helloworld.proto")]) == 0
    (package / "__init__.py").write_text("")  # the article: "需要我们手动添加"


async def test_seed_client_talks_to_our_server(server: BuiltServer, pki: Pki, tmp_path: Path) -> None:
    _seed_stubs(tmp_path)
    shutil.copy(SEED / "hello_client.py", tmp_path / "hello_client.py")
    env = clean_env(SEED_TARGET=f"localhost:{server.port}", SEED_CA=pki.ca, SEED_TOKEN=pki.token, PYTHONPATH=tmp_path)
    result = await asyncio.to_thread(run, [sys.executable, "hello_client.py"], env, 30, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello client received: Hello, eric!\n"


SERVICE = "rpc_package.HelloWorldService"
SEED_APP = """\
# The team's app: the seed article's servicer (tests/seed/hello_server.py, imported unchanged) and its
# generated rpc_package, on the stack.
from hello_server import Hello
from rpc_package.helloworld_pb2_grpc import add_HelloWorldServiceServicer_to_server


def register(server):
    add_HelloWorldServiceServicer_to_server(Hello(), server)
"""


async def test_the_seeds_own_servicer_and_generated_code_serve_through_hello_app(pki: Pki, tmp_path: Path) -> None:
    _seed_stubs(tmp_path)
    for name in ("hello_server.py", "hello_client.py"):
        shutil.copy(SEED / name, tmp_path / name)
    (tmp_path / "seed_app.py").write_text(SEED_APP)
    # Its generated code is the seed's own rpc_package: the server must load none of Hello's beside it.
    env = pki_env(pki, HELLO_APP="seed_app:register", PYTHONPATH=tmp_path)
    server = ServerProcess([str(BIN / "hello-server")], env, cwd=tmp_path)
    try:
        port = server.serving_port()
        client = clean_env(SEED_TARGET=f"localhost:{port}", SEED_CA=pki.ca, SEED_TOKEN=pki.token, PYTHONPATH=tmp_path)
        result = await asyncio.to_thread(run, [sys.executable, "hello_client.py"], client, 30, tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "hello client received: Hello, eric!\n"  # a sync handler, in the pool
        line = await server.await_event("rpc")
        assert (line["method"], line["code"], line["principal"]) == (f"/{SERVICE}/SayHello", "OK", "dev")
        refused = await asyncio.to_thread(
            run, [sys.executable, "hello_client.py"], {**client, "SEED_TOKEN": "not-a-valid-token-at-all"}, 30, tmp_path
        )
        assert "UNAUTHENTICATED" in refused.stderr
    finally:
        server.stop()
