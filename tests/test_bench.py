"""The benchmark harness measures what it claims: h2load's framed requests reach our server as OK calls,
and the server's own OK count is what the harness compares against (a run with refused calls is invalid)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.bench import instructions, layers
from tests.bench.bench import Bench, Pki, Variant, seed_stubs

from .conftest import Pki as FixturePki

OURS = Variant("ours", "(c) ours", plaintext=False)


def _bench(pki: FixturePki, tmp_path: Path, token: str) -> Bench:
    return Bench(Pki(pki.dir, token), seed_stubs(tmp_path / "seed"), tmp_path, duration=0.2)


async def _measure(bench: Bench, variant: Variant, *loads: str) -> list[dict[str, Any]]:
    """Start ``variant`` fresh, run each load against it (unpinned), stop it; the results."""
    server = await asyncio.to_thread(bench.start, variant, False)
    try:
        for load in loads:
            await asyncio.to_thread(bench.measure, server, load, False, 0)
    finally:
        await asyncio.to_thread(server.stop)
    return bench.results


async def test_h2load_calls_are_counted_ok_by_the_server(pki: FixturePki, tmp_path: Path) -> None:
    results = await _measure(_bench(pki, tmp_path, pki.token), OURS, "h2load 4x32", "client 4x32")
    assert [r["valid"] for r in results] == [True, True]
    for result in results:
        assert result["server_ok_calls"] >= result["calls"] >= 200
        assert result["calls_per_s"] > 0
        assert result["cpu_us_per_call"] > 0


async def test_bare_baseline_over_tls_answers_h2load_over_tls(pki: FixturePki, tmp_path: Path) -> None:
    bare_tls = Variant("bare-tls", "(a') bare aio over TLS", plaintext=False, client=False, unpinned=False)
    [result] = await _measure(_bench(pki, tmp_path, pki.token), bare_tls, "h2load 4x32")
    assert result["valid"] is True
    assert result["calls"] >= 200


async def test_refused_calls_make_the_run_invalid(pki: FixturePki, tmp_path: Path) -> None:
    [result] = await _measure(_bench(pki, tmp_path, "a-token-the-server-does-not-know"), OURS, "h2load 4x32")
    assert result["valid"] is False
    assert result["server_ok_calls"] == 0


async def test_every_layer_of_the_production_chain_is_timed_on_every_call(pki: FixturePki, tmp_path: Path) -> None:
    figures = await asyncio.to_thread(layers.measure, _bench(pki, tmp_path, pki.token), 300)
    assert (figures["calls"], figures["failed"]) == (300, 0)
    assert figures["timed_calls"] == layers.WARM_UP + 300
    # In the chain's order, outermost first, with the hooks each layer has for a unary call.
    timed = [(name, sorted(hooks)) for name, hooks in figures["layers"].items()]
    assert timed == [
        (layers.TIMER, ["enter", "exit"]),
        ("RequestId", ["enter"]),
        ("AccessLog", ["exit"]),
        ("Metrics", ["enter", "exit"]),
        ("ConcurrencyLimit", ["enter", "exit"]),
        ("Auth", ["enter"]),
        ("Wire", ["decode", "encode"]),
    ]
    assert all(us > 0 for hooks in figures["layers"].values() for us in hooks.values())
    # The layers the instruction counts leave out one at a time are the chain's.
    assert tuple(name for name, _hooks in timed[1:]) == instructions.LAYERS
    assert "| AccessLog |" in layers.report(figures)


async def test_instructions_per_call_are_counted_under_callgrind(pki: FixturePki, tmp_path: Path) -> None:
    bare_tls = instructions.VARIANTS["bare-tls"]
    counted = await asyncio.to_thread(instructions.count, _bench(pki, tmp_path, pki.token), bare_tls, 200)
    assert (counted["calls"], counted["failed"]) == (200, 0)
    # A call through grpc's C core and Python takes hundreds of thousands of instructions, not a few.
    assert 50_000 < counted["instructions_per_call"] < 50_000_000
    assert "| bare-tls |" in instructions.report([counted])


def test_seed_server_is_the_article_verbatim() -> None:
    text = (Path(__file__).parent / "seed" / "hello_server.py").read_text()
    assert "server.add_insecure_port('[::]:50000')" in text
    assert "futures.ThreadPoolExecutor(max_workers=10)" in text


def _counts(bare_tls: float, ours: float, layers: dict[str, float] | None = None) -> list[dict[str, Any]]:
    entries = [("bare-tls", bare_tls), ("ours", ours)]
    if layers is not None:
        entries.append((f"ours without {instructions.NOTHING_LEFT_OUT}", ours))
        entries += [(f"ours without {layer}", ours - cost) for layer, cost in layers.items()]
    return [{"variant": name, "calls": 2000, "failed": 0, "instructions_per_call": value} for name, value in entries]


def test_the_instruction_guard_fails_past_its_growth_and_names_the_layer_that_grew() -> None:
    layers = {"AccessLog": 60_000.0, "Auth": 20_000.0}
    committed = instructions.figures(_counts(360_000, 480_000, layers))
    assert instructions.grown(_counts(360_000, 480_000 * 1.04), committed) is None
    growth = instructions.grown(_counts(360_000, 480_000 * 1.08), committed)
    assert growth is not None
    assert round(growth, 2) == 0.08
    blamed = instructions.blame(_counts(360_000, 520_000, {"AccessLog": 61_000.0, "Auth": 59_000.0}), committed)
    assert blamed.startswith("Auth grew most")
    elsewhere = instructions.blame(_counts(360_000, 520_000, layers), committed)
    assert elsewhere.startswith("no layer grew")


def test_the_committed_counts_are_the_installed_grpcios_and_the_guard_refuses_another_releases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = json.loads(instructions.COMMITTED.read_text())
    # After a grpcio bump: python -m tests.bench.instructions --record (tests/bench/README.md).
    assert committed["grpcio"] == grpc.__version__
    older = tmp_path / "instructions.json"
    older.write_text(json.dumps({**committed, "grpcio": "1.0.0"}))
    monkeypatch.setattr(instructions, "COMMITTED", older)
    counts = _counts(committed["bare-tls"], committed["ours"])
    refused = instructions.guard(None, counts, 2000)  # type: ignore[arg-type]
    assert refused is not None
    assert refused.startswith(f"the committed figures were counted on grpcio 1.0.0, this is {grpc.__version__}")
