"""A real browser calls the service through the edge: headless Chromium, a gRPC-Web client library, fetch JSON.

The page (tools/browser/) is served by this test from an origin of its own, another port than the
edge's, so each call is cross-origin and CORS is the edge's: the page's own origin is the only one
allowed, and the same page loaded from another origin gets nothing. Its gRPC-Web client is
@connectrpc/connect-web with code that protoc-gen-es generates from the descriptor set the edge uses
(hello-edge config); esbuild bundles it; puppeteer-core drives Debian's chromium (it downloads no
browser). The test reads what the page shows and saves its screenshot as docs/edge-browser.png.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Pki
from .edge_stack import EdgeProcess, running_edge
from .processes import BIN, clean_env, pki_env, run

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
PAGE = TOOLS / "browser"
NODE_BIN = TOOLS / "node_modules" / ".bin"
SCREENSHOT = ROOT / "docs" / "edge-browser.png"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[tuple[int, Path]]:
    """The page and its bundle, built from the edge's own descriptor set, served on 127.0.0.1 (its port, its folder)."""
    out = tmp_path_factory.mktemp("page")
    edge_config = run(
        [str(BIN / "hello-edge"), "config", "--out", str(out / "edge")],
        pki_env(pki, HELLO_EDGE__UPSTREAM_CA_FILE=pki.ca),
    )
    assert edge_config.returncode == 0, edge_config.stderr
    tools_env = clean_env(PATH=f"{NODE_BIN}{os.pathsep}{os.environ['PATH']}", NODE_PATH=str(TOOLS / "node_modules"))
    generate = [str(NODE_BIN / "buf"), "generate", f"{out / 'edge' / 'descriptors.pb'}#format=binpb"]
    generate += ["--template", str(PAGE / "buf.gen.yaml"), "-o", str(out)]
    generate += ["--path", "rpc_package/helloworld.proto", "--path", "google/rpc/error_details.proto"]
    generated = run(generate, tools_env, 60)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    for name in ("page.html", "page.js"):
        shutil.copy(PAGE / name, out / name)
    bundle = [str(NODE_BIN / "esbuild"), str(out / "page.js"), "--bundle", "--format=esm", "--target=es2022"]
    bundled = run([*bundle, f"--outfile={out / 'bundle.js'}", "--log-level=warning"], tools_env, 60)
    assert bundled.returncode == 0, bundled.stdout + bundled.stderr
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], out
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def edge(pki: Pki, page: tuple[int, Path]) -> Iterator[EdgeProcess]:
    """The edge, letting in only the page's own origin."""
    with running_edge(pki, HELLO_EDGE__ALLOWED_ORIGINS=f"http://127.0.0.1:{page[0]}") as started:
        yield started


def _load(page_url: str, edge: EdgeProcess, pki: Pki, screenshot: Path) -> dict[str, Any]:
    """What each cell of the page shows once its calls are done, as headless Chromium loaded it."""
    env = clean_env(EDGE_TOKEN=pki.token, NODE_PATH=str(TOOLS / "node_modules"))
    result = run(["node", str(PAGE / "run-page.mjs"), f"{page_url}#edge={edge.url}", str(screenshot)], env, 90)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def test_the_page_calls_through_the_edge_with_grpc_web_and_fetch(
    page: tuple[int, Path], edge: EdgeProcess, pki: Pki
) -> None:
    SCREENSHOT.parent.mkdir(exist_ok=True)
    loaded = _load(f"http://127.0.0.1:{page[0]}/page.html", edge, pki, SCREENSHOT)
    assert loaded["problems"] == []
    assert loaded["shown"] == {
        "grpc-web": "Hello, Browser!",
        "grpc-web-stream": "1: Hello, Stream! · 2: Hello, Stream! · 3: Hello, Stream!",
        "json": "200: Hello, Fetch!",
        "refused": "INVALID_ARGUMENT (3), BadRequest name: must not be empty",
        "json-refused": "401: UNAUTHENTICATED (16), ErrorInfo MISSING",
    }
    # The browser made them: its calls are in the server's access log, under its user agent.
    agents = {e.get("user_agent", "") for e in edge.server_events if e.get("event") == "rpc"}
    assert any("HeadlessChrome" in agent for agent in agents), agents
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_same_page_from_an_origin_not_allowed_gets_nothing(
    page: tuple[int, Path], edge: EdgeProcess, pki: Pki, tmp_path: Path
) -> None:
    # localhost is another origin than 127.0.0.1, though the same server: CORS refuses it.
    loaded = _load(f"http://localhost:{page[0]}/page.html", edge, pki, tmp_path / "refused.png")
    shown = loaded["shown"]
    for cell in ("grpc-web", "grpc-web-stream", "json", "json-refused"):
        assert shown[cell].startswith("unexpected:"), shown
    assert "Failed to fetch" in shown["json"]
    assert any("CORS policy" in problem for problem in loaded["problems"]), loaded["problems"]
