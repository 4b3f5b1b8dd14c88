"""The benchmark harness (bench/) in its short mode against one bake: counts only, never a time.

The harness runs for real (separate OS processes, flow-controlled p2p, group fan-out over two processes,
a 64 KiB payload; 20 WebSocket clients over 2 gunicorn workers), so a layer that loses or duplicates
under load, or a harness broken by a change to the generated project, fails here. It needs no peers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.layer_bench import ALL_BACKENDS, broker_answers
from bench.project import check_project
from bench.ws_load import Result, plot, table, verdict

from .conftest import ROOT, Bake

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def project(bake: Bake) -> Path:
    return bake(channel_layer="redis", keep_all_backends="yes", web_workers="2", use_celery="no")


def harness(*args: str, timeout: float = 150) -> str:
    """``python -m <args>`` from the template's root; its stdout (stderr in the failure message)."""
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def backends_up() -> list[str]:
    """Every backend whose broker answers; under CI=true a broker that does not answer fails the run."""
    down = [name for name in ALL_BACKENDS if not broker_answers(name)]
    if down and CI:
        pytest.fail(f"brokers down under CI=true: {down}")
    return [name for name in ALL_BACKENDS if name not in down]


@pytest.mark.slow
def test_layer_bench_short_loses_and_duplicates_nothing(project: Path, tmp_path: Path) -> None:
    backends = backends_up()
    out = tmp_path / "results.json"
    harness("bench.layer_bench", "--short", "--no-setup", "--impls", ",".join(f"ours:{b}" for b in backends),
            "--project", str(project), "--json", str(out))
    rows: list[dict[str, Any]] = json.loads(out.read_text())
    for backend in backends:
        mine = [row for row in rows if row["impl"] == f"ours:{backend}"]
        cases = {row["case"] for row in mine}
        assert {"p2p", "payload 64 KiB"} <= cases and any(c.startswith("fan-out") for c in cases), mine
        for row in mine:
            assert row["status"] == "ok", row
            assert row["expected"] > 0 and row["received"] == row["expected"], row
            assert row["duplicates"] == 0, row


@pytest.mark.slow
def test_ws_load_short_loses_and_duplicates_nothing(project: Path) -> None:
    if "redis" not in backends_up():
        pytest.skip("redis does not answer")
    stdout = harness("bench.ws_load", "--impl", "ours", "--clients", "20", "--workers", "2", "--rooms", "2",
                     "--messages", "3", "--rate", "2", "--drain", "30", "--deadline", "100", "--no-setup",
                     "--project", str(project), "--out", "")
    result = json.loads(stdout.splitlines()[0])
    assert result["status"] == "ok", result
    assert result["expected"] == 2 * 10 * 10 * 3, result  # 2 rooms of 10, each member hears 30 messages
    assert result["delivered"] == result["expected"], result
    assert result["lost"] == 0 and result["dup"] == 0, result


def test_a_path_that_is_no_bake_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not a baked project"):
        check_project(tmp_path)


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
    if importlib.util.find_spec("matplotlib") is None:  # the generated project's dev extra draws it
        assert written is None
    else:
        assert written is not None and written.read_bytes().startswith(b"\x89PNG")
