"""Shared fixtures: a dev PKI made by the project's own cert code, and real servers on 127.0.0.1:0."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import grpc
import pytest

# Keep grpc's C core quiet in the test output (it reads this when grpc is first imported).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from service.client import create_channel
from service.config.settings import Settings
from service.generated.rpc_package import helloworld_pb2_grpc
from service.hello import register as register_hello
from service.registry import Registry
from service.security.tokens import parse_tokens
from service.server.app import App
from service.server.factory import BuiltServer, build_server
from service.testing import Pki, client_settings, server_settings, serving

from .manifests import VARIANTS, render

# Every secret a test makes is registered here; at the end of the session all captured output,
# failure reports and server process output are searched for each (see pytest_sessionfinish).
SECRETS: set[str] = set()
CAPTURED: list[str] = []


def secret(value: str) -> str:
    """Register ``value`` as a secret that must never appear in any log or error message."""
    SECRETS.add(value)
    return value


def _key_material(pem: bytes) -> str:
    # A private key's base64 body: distinctive, and what a leak of the key would contain.
    return "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))[:64]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    CAPTURED.extend(text for _, text in report.sections)
    if report.longrepr is not None:
        CAPTURED.append(str(report.longrepr))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = sorted(s for s in SECRETS if any(s in text for text in CAPTURED))
    if leaked:
        # Say how many, not which: the report must not leak them again.
        print(f"\nsecrets found in captured logs or error messages: {len(leaked)}; see tests/conftest.py")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(_pki(tmp_path_factory, "pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second, unrelated CA: what an attacker or a misconfigured peer would hold."""
    return Pki(_pki(tmp_path_factory, "other-pki"))


def _pki(factory: pytest.TempPathFactory, name: str) -> Path:
    directory = Pki.create(factory.mktemp(name)).dir
    for key in ("ca-key.pem", "server-key.pem", "client-key.pem"):
        secret(_key_material((directory / key).read_bytes()))
    secret(parse_tokens((directory / "token").read_text())[0][1])
    return directory


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests say every setting they mean; nothing leaks in from the developer's shell."""
    for key in list(os.environ):
        if key.startswith("HELLO_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kubectl kustomize output for the base and each overlay (tests/manifests.py reads it)."""
    out = tmp_path_factory.mktemp("rendered")
    return {variant: render(variant, out) for variant in VARIANTS}


def tokenless_channel(pki: Pki, port: int) -> AbstractAsyncContextManager[grpc.aio.Channel]:
    """A TLS channel that trusts the dev CA and sends no token: each auth test adds the metadata it means to."""
    return create_channel(client_settings(pki, port, token=None))


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[BuiltServer]:
    """Our server, TLS and token auth, started on 127.0.0.1:0."""
    async with running(server_settings(pki)) as built:
        yield built


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[BuiltServer]:
    """Our server requiring client certificates signed by the dev CA."""
    async with running(server_settings(pki, mtls=True)) as built:
        yield built


def hello_registry(settings: Settings, servicer: Any = None) -> Registry:
    """The Hello app's registry: Hello's servicer, or ``servicer`` (a HelloWorldService servicer) in its place."""
    registry = Registry(settings)
    _hello(servicer, registry)
    return registry


async def build_hello(settings: Settings) -> BuiltServer:
    """build_server for the Hello app: an unstarted server."""
    return await build_server(settings, hello_registry(settings))


class running:
    """``async with running(settings) as built``: a started server (service.testing.serving), stopped on exit.

    It serves ``app``, else Hello (with ``servicer`` in place of Hello's).
    """

    def __init__(self, settings: Settings, servicer: Any = None, tracer: Any = None, app: App | None = None) -> None:
        self._serving = serving(app or functools.partial(_hello, servicer), settings, tracer=tracer)

    async def __aenter__(self) -> BuiltServer:
        return await self._serving.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        await self._serving.__aexit__(*exc)


def _hello(servicer: Any, registry: Registry) -> None:
    """Hello, with ``servicer`` as its servicer when given."""
    if servicer is None:
        register_hello(registry)
    else:
        helloworld_pb2_grpc.add_HelloWorldServiceServicer_to_server(servicer, registry.as_server)
