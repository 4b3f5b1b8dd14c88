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

from bench import conn_report
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


@pytest.mark.slow
def test_connections_short_connects_reconnects_and_delivers_to_all(project: Path, tmp_path: Path) -> None:
    """The connections workload at 200 clients, ours only: every phase ran and its counts add up."""
    if "redis" not in backends_up():
        pytest.skip("redis does not answer")
    out = tmp_path / "connections.json"
    stdout = harness("bench.connections", "--impl", "ours", "--clients", "200", "--storm", "100", "--big-room", "200",
                     "--storms", "2", "--broadcasts", "1", "--slow", "20", "--burst", "1500", "--slow-wait", "30",
                     "--deadline", "120", "--no-setup", "--project", str(project), "--out", "", "--json", str(out),
                     timeout=170)
    rep = json.loads(out.read_text())["reports"][0]
    assert rep["status"] == "ok", rep["status"]
    assert rep["connected"] == 200 and rep["big_joined"] == 200, rep
    assert rep["connect_rate"] > 0 and rep["kib_per_conn"] > 0, rep
    assert rep["bc_expected"] == 200 and rep["bc_received"] == 200, rep  # one broadcast, every member had it
    assert len(rep["storms"]) == 2, rep["storms"]
    for storm in rep["storms"]:
        assert storm["clients"] == storm["dropped"] == storm["back"] == 100, storm
        assert storm["workers_restarted"] == 0, storm
    # a 6 MB burst is more than a slow socket's kernel buffer and outbox: ours closes every one of them
    slow = {k: v for k, v in rep.items() if k.startswith(("slow", "burst")) or k in ("dropped", "error_frames")}
    assert sum(rep["slow_closed"].values()) == 20 and rep["slow_open"] == 0, slow
    assert rep["leak"]["closed"]["client_sockets"] == 0, rep["leak"]
    assert rep["server_log"]["tracebacks"] == 0, rep["server_log"]
    phases = rep["healthz_by_phase"]
    assert {"connect", "big room", "broadcast", "storm 1", "storm 2", "slow readers"} <= set(phases), phases
    assert all(p["samples"] > 0 for p in phases.values()), phases
    assert "| connections held | 20,000 | 200 of 200 |" in stdout


def test_the_connections_table_sets_ours_beside_socketio(tmp_path: Path) -> None:
    def report(impl: str, rate: float, kib: float) -> conn_report.Report:
        rep = conn_report.Report(impl, 10, 2, 2, 10, 5, 2, 10, 1, connected=10, connect_rate=rate, kib_per_conn=kib)
        rep.storms = [{"seconds": 1.5, "clients": 5, "dropped": 5, "back": 5, "refused": 0, "failed": 1,
                       "workers_restarted": 0}]
        rep.timeline = {"rss": [(0.0, "idle", 1024), (1.0, "connect", 2048)], "health": [(0.5, "idle", 2.0)]}
        return rep

    rows = [report("ours", 300.0, 20.0), report("socketio", 100.0, 40.0)]
    body = conn_report.table(rows)
    assert "| connect rate, sockets/s (connect + auth + join, 100 at a time) |  | 300 | 100 | 3x |" in body
    assert "| RSS per idle connection, KiB | ≤ 30 | 20.0 | 40.0 | 0.5x |" in body
    assert "| storm: attempts failed (each storm) | 0 | 1 | 1 | 1x |" in body
    payload = {"started": "then", "commit": "abc", "reports": [r.__dict__ for r in rows],
               "args": {"clients": "10", "storm": "5", "no_setup": "True", "project": "None"}}
    (tmp_path / "run.json").write_text(json.dumps(payload))
    harness("bench.connections", "--from-json", str(tmp_path / "run.json"), "--out", str(tmp_path / "re.md"))
    assert "| RSS per idle connection, KiB | ≤ 30 | 20.0 | 40.0 | 0.5x |" in (tmp_path / "re.md").read_text()
    written = conn_report.plot(rows, tmp_path / "connections.png")
    if importlib.util.find_spec("matplotlib") is not None:
        assert written is not None and written.read_bytes().startswith(b"\x89PNG")


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
