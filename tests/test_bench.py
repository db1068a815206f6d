"""The benchmark harness measures what it claims: h2load's framed requests reach our server as OK calls,
and the server's own OK count is what the harness compares against (a run with refused calls is invalid)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.bench.bench import Bench, Pki, Variant, seed_stubs

from .conftest import Pki as FixturePki

OURS = Variant("ours", "(c) ours", plaintext=False)


def _bench(pki: FixturePki, tmp_path: Path, token: str) -> Bench:
    return Bench(Pki(pki.dir, token), seed_stubs(tmp_path / "seed"), tmp_path, duration=0.2)


async def test_h2load_calls_are_counted_ok_by_the_server(pki: FixturePki, tmp_path: Path) -> None:
    bench = _bench(pki, tmp_path, pki.token)
    server = await asyncio.to_thread(bench.start, OURS, False)
    try:
        await asyncio.to_thread(bench.measure, server, "h2load 4x32", False, 0)
        await asyncio.to_thread(bench.measure, server, "client 4x32", False, 0)
    finally:
        await asyncio.to_thread(server.stop)
    assert [r["valid"] for r in bench.results] == [True, True]
    for result in bench.results:
        assert result["server_ok_calls"] >= result["calls"] >= 200
        assert result["calls_per_s"] > 0
        assert result["cpu_us_per_call"] > 0


async def test_bare_baseline_over_tls_answers_h2load_over_tls(pki: FixturePki, tmp_path: Path) -> None:
    bench = _bench(pki, tmp_path, pki.token)
    bare_tls = Variant("bare-tls", "(a') bare aio over TLS", plaintext=False, client=False, unpinned=False)
    server = await asyncio.to_thread(bench.start, bare_tls, False)
    try:
        await asyncio.to_thread(bench.measure, server, "h2load 4x32", False, 0)
    finally:
        await asyncio.to_thread(server.stop)
    [result] = bench.results
    assert result["valid"] is True
    assert result["calls"] >= 200


async def test_refused_calls_make_the_run_invalid(pki: FixturePki, tmp_path: Path) -> None:
    bench = _bench(pki, tmp_path, "a-token-the-server-does-not-know")
    server = await asyncio.to_thread(bench.start, OURS, False)
    try:
        await asyncio.to_thread(bench.measure, server, "h2load 4x32", False, 0)
    finally:
        await asyncio.to_thread(server.stop)
    [result] = bench.results
    assert result["valid"] is False
    assert result["server_ok_calls"] == 0


def test_seed_server_is_the_article_verbatim() -> None:
    text = (Path(__file__).parent / "seed" / "hello_server.py").read_text()
    assert "server.add_insecure_port('[::]:50000')" in text
    assert "futures.ThreadPoolExecutor(max_workers=10)" in text
