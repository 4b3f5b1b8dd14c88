"""scripts/load.py, tiny, against a live server: what it prints must add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..live_server import ROOT, live_server, service_env

LOAD = ROOT / "scripts" / "load.py"


def load(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(LOAD), *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_every_message_reaches_every_member_of_its_room_once(prefix: str, tmp_path: Path) -> None:
    with live_server(service_env("inmemory", prefix), workers=1, tmp_path=tmp_path) as server:
        done = load("--url", server.url, "--clients", "6", "--rooms", "2", "--messages", "3", "--rate", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["expected"] == 6 * 3 * 3  # 6 clients, each hearing the 3 messages of each of its room's 3 members
    assert report["delivered"] == report["expected"] and report["lost"] == 0 and report["duplicated"] == 0
    assert report["msgs_per_s"] > 0
    assert 0 <= report["p50_ms"] <= report["p99_ms"]


def test_bad_sizes_are_refused_with_a_message() -> None:
    done = load("--clients", "2", "--rooms", "3")
    assert done.returncode == 2
    assert "rooms at most clients" in done.stderr
