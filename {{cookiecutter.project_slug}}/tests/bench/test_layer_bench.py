"""The benchmark's short mode on every installed backend: counts only, never a time.

It runs the real harness (separate OS processes, flow-controlled p2p, group fan-out over two
processes, a 64 KiB payload), so a layer that loses or duplicates under load fails here.
"""

from __future__ import annotations

import pytest

from bench.layer_bench import SHORT, run

from ..brokers import installed_backends, require_broker


@pytest.mark.slow
@pytest.mark.parametrize("backend", installed_backends())
async def test_short_bench_loses_and_duplicates_nothing(backend: str) -> None:
    require_broker(backend)
    results = await run([f"ours:{backend}"], SHORT, {"p2p", "fanout", "payload"})
    assert {r.case for r in results} >= {"p2p", "payload 64 KiB"}, results
    assert any(r.case.startswith("fan-out") for r in results), results
    for result in results:
        assert result.status == "ok", result
        assert result.expected > 0 and result.received == result.expected, result
        assert result.lost == 0 and result.duplicates == 0, result
