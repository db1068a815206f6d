"""The end-of-session secret scan (conftest.pytest_sessionfinish) works: it finds a secret that leaks."""

from __future__ import annotations

from .conftest import CAPTURED, SECRETS, Pki, secret


def test_scan_knows_the_secrets_the_suite_used(pki: Pki) -> None:
    assert pki.token in SECRETS
    assert len(SECRETS) >= 4  # the dev token and the three private keys, at least


def test_scan_would_find_a_leak() -> None:
    canary = secret("canary-0123456789-never-printed")
    try:
        CAPTURED.append(f"an error message that leaks {canary}")
        assert any(canary in text for text in CAPTURED)
    finally:
        CAPTURED.pop()
        SECRETS.discard(canary)
