"""pytest fixtures for testing a service on the stack (service.testing); pytest loads them by the package's entry point.

- ``hello_stack``: the app ``hello_app`` names, served with ``hello_settings`` (service.testing.Stack).
- ``hello_app``: what to serve; override it in your conftest.py (default: Hello).
- ``hello_settings``: Settings fields for the server, as service.testing.serve takes them (default: none).
- ``hello_pki``: throwaway certificates and a token, made once per session.

``hello_stack`` is async: it needs pytest-asyncio. service.testing is imported only when a fixture
is used, so that loading the plugin costs a pytest run nothing (and imports no grpc).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .server.app import App
    from .testing import Pki, Stack

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - without it, hello_stack says what is missing
    pytest_asyncio = None  # type: ignore[assignment]


@pytest.fixture(scope="session")
def hello_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A development CA, server and client certificates and a token, for the whole session."""
    from .testing import Pki

    return Pki.create(tmp_path_factory.mktemp("hello-pki"))


@pytest.fixture
def hello_app() -> App | str:
    """The app hello_stack serves: override it with your "package.module:attribute" or function."""
    from .testing import DEFAULT_APP

    return DEFAULT_APP


@pytest.fixture
def hello_settings() -> dict[str, Any]:
    """Settings fields for hello_stack's server (``{"rate_limit": {"per_second": 1}}``); override it."""
    return {}


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def hello_stack(hello_app: App | str, hello_settings: dict[str, Any], hello_pki: Pki) -> AsyncIterator[Stack]:
        """The app served on the stack, started for the test and stopped after it."""
        from .testing import serve

        async with serve(hello_app, pki=hello_pki, **hello_settings) as stack:
            yield stack

else:  # pragma: no cover

    @pytest.fixture
    def hello_stack() -> None:
        """Needs pytest-asyncio."""
        pytest.fail("hello_stack is async: install pytest-asyncio (pip install pytest-asyncio)")
