"""The WebSocket load benchmark's short mode on our chat alone: counts only, never a time.

20 real WebSocket clients in 2 rooms over 2 gunicorn workers on Redis; every message must reach every
member of its room exactly once. It needs no peer virtualenv.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bench.ws_load import Result, plot, run_case, table, verdict

from ..brokers import require_broker


@pytest.mark.slow
async def test_ws_load_short_loses_and_duplicates_nothing() -> None:
    require_broker("redis")
    result = await run_case("ours", clients=20, workers=2, rooms=2, messages=3, rate=2.0, drain=30, deadline=120)
    assert result.status == "ok", result
    assert result.expected == 2 * 10 * 10 * 3, result
    assert result.delivered == result.expected, result
    assert result.lost == 0 and result.dup == 0, result


def test_the_verdict_takes_the_median_of_the_runs() -> None:
    def row(impl: str, run: int, rate: float, p99: float) -> Result:
        return Result(impl, 10, 2, 1, delivered=1000, rate=rate, p99_ms=p99, cpu_s=0.02, run=run)

    runs = [(2.5, 0.4), (1.5, 0.3), (2.2, 0.45)]  # ours/socketio ratios of three runs
    rows = [r for n, (rate, p99) in enumerate(runs, 1) for r in (row("ours", n, rate * 100, p99 * 10),
                                                                   row("socketio", n, 100, 10))]
    assert verdict(rows).startswith("Target (≥2x python-socketio's msgs/s at ≤½ its p99, nothing lost): **met**")
    assert "throughput 2.20x, p99 0.40x (median of 3 runs)" in verdict(rows)
    assert "| 20 |" in table(rows)  # server CPU µs per delivery: 0.02 s / 1000
    rows[0].lost = 1
    assert "**not met**" in verdict(rows)


def test_the_plot_is_a_png_when_matplotlib_is_there(tmp_path: Path) -> None:
    cases = (("ours", 300.0, 0), ("socketio", 100.0, 0), ("broadcaster", 90.0, 5))
    rows = [Result(impl, 10, 2, 1, delivered=100, rate=rate, p99_ms=9.0, lost=lost, run=run)
            for run in (1, 2) for impl, rate, lost in cases]
    written = plot(rows, tmp_path / "ws_load.png")
    if importlib.util.find_spec("matplotlib") is None:  # the dev extra draws it
        assert written is None
    else:
        assert written is not None and written.read_bytes().startswith(b"\x89PNG")
