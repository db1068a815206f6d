"""The installed wheel serves from outside the repository, with only the locked runtime dependencies."""

from __future__ import annotations

import asyncio
import sys
import zipfile
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


def test_wheel_is_typed_and_carries_its_license(installed: Path) -> None:
    # py.typed tells mypy and pyright the client library's hints are meant (PEP 561); the license
    # file travels with the license expression (PEP 639).
    [wheel] = installed.parent.parent.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [metadata] = [name for name in names if name.endswith(".dist-info/METADATA")]
        headers = archive.read(metadata).decode()
        [license_file] = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
        license_text = archive.read(license_file).decode()
    assert "service/py.typed" in names
    assert "License-Expression: Apache-2.0" in headers.splitlines()
    assert "License-File: LICENSE" in headers.splitlines()
    assert "Apache License" in license_text
    assert "Version 2.0, January 2004" in license_text
    assert license_text == (ROOT / "LICENSE").read_text()


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


def test_tracing_is_an_extra_and_its_absence_is_a_start_up_error(installed: Path, pki: Pki) -> None:
    # requirements.lock is the default install: no OpenTelemetry, so tracing names the extra.
    result = run([str(installed / "python"), "-c", "import opentelemetry"], clean_env(), 60, installed)
    assert result.returncode != 0
    env = pki_env(pki, HELLO_TRACING__ENABLED="true")
    result = run([str(installed / "hello-server")], env, 60, installed.parent.parent)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("hello-server: HELLO_TRACING__ENABLED: tracing needs the [tracing] extra"), line
    assert "pip install 'hello-grpc-service[tracing]'" in line


def test_the_wheel_ships_service_testing_and_its_pytest_plugin(installed: Path) -> None:
    # service.testing imports without pytest (the runtime has none); pytest finds the plugin by its entry point.
    code = (
        "import importlib.metadata as m, sys, service.testing\n"
        "print(service.testing.__file__)\n"
        "print([e.value for e in m.entry_points(group='pytest11') if e.name == 'hello-grpc-service'])\n"
        "print('pytest' in sys.modules)"
    )
    result = run([str(installed / "python"), "-c", code], clean_env(), 60, installed)
    assert result.returncode == 0, result.stderr
    module, plugins, pytest_loaded = result.stdout.splitlines()
    assert Path(module).is_relative_to(installed.parent)
    assert (plugins, pytest_loaded) == ("['service.pytest_plugin']", "False")
