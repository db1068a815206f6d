"""The installed wheel serves from outside the repository, with only the locked runtime dependencies."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from service.client import create_channel, say_hello

from .conftest import Pki, client_settings
from .processes import ServerProcess, clean_env, pki_env, run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding requirements.lock and the wheel built from this checkout; returns its bin/."""
    work = tmp_path_factory.mktemp("wheel")
    steps = [
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            work,
            ROOT,
        ],
        [sys.executable, "-m", "venv", work / "venv"],
        [
            work / "venv/bin/python",
            "-m",
            "pip",
            "install",
            "--quiet",
            "--require-hashes",
            "-r",
            ROOT / "requirements.lock",
        ],
    ]
    for step in steps:
        result = run([str(arg) for arg in step], clean_env(), 300, work)
        assert result.returncode == 0, result.stderr
    [wheel] = work.glob("*.whl")
    result = run(
        [str(work / "venv/bin/python"), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        clean_env(),
        120,
        work,
    )
    assert result.returncode == 0, result.stderr
    return work / "venv" / "bin"


def test_wheel_contains_generated_code_and_no_tests(installed: Path) -> None:
    code = (
        "import service, service.generated.rpc_package.helloworld_pb2_grpc as g\n"
        "print(service.__file__)\nprint(g.__file__)"
    )
    result = run([str(installed / "python"), "-c", code], clean_env(), 60, installed)
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        assert Path(line).is_relative_to(installed.parent), line  # from site-packages, not the checkout
    result = run([str(installed / "python"), "-c", "import tests"], clean_env(), 60, installed)
    assert result.returncode != 0


async def test_installed_hello_server_serves(installed: Path, pki: Pki) -> None:
    server = ServerProcess([str(installed / "hello-server")], pki_env(pki), cwd=installed.parent.parent)
    try:
        port = await asyncio.to_thread(server.serving_port)
        async with create_channel(client_settings(pki, port)) as channel:
            assert await say_hello(channel, "wheel") == "Hello, wheel!"
    finally:
        server.stop()


def test_installed_python_dash_m_service(installed: Path) -> None:
    result = run([str(installed / "python"), "-m", "service", "--help"], clean_env(), 60, installed)
    assert result.returncode == 0, result.stderr
    assert "usage: hello-server" in result.stdout
