"""gunicorn.conf.py run for real: what a host of many sockets needs from it (docs/scaling.md).

Started the way a container runtime starts it, with a soft open-file limit far below the hard one,
the master and its worker come out at the hard limit; the socket listens with ``BACKLOG``.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..live_server import ROOT, LiveServer, free_port, service_env, wait_ready

SOFT, HARD = 256, 4096  # a runtime's 1024 / 524288, scaled down to stay under this machine's own hard limit
BACKLOG = 1234


def open_file_limits(pid: int) -> tuple[int, int]:
    """``(soft, hard)`` RLIMIT_NOFILE of ``pid``, as the kernel reports it."""
    limits = Path(f"/proc/{pid}/limits").read_text()
    found = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M)
    assert found, limits
    return int(found.group(1)), int(found.group(2))


def listen_backlog(port: int) -> int:
    """The accept-queue length of the socket listening on ``port`` (``ss`` shows it as Send-Q)."""
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("ss (iproute2) is not installed")
    out = subprocess.run([ss, "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    (line,) = out.splitlines()
    return int(line.split()[2])


def lowered_limits() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc (Linux)")
def test_workers_start_at_the_hard_open_file_limit_and_listen_with_the_backlog(prefix: str, tmp_path: Path) -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < HARD:
        pytest.skip(f"this machine's hard open-file limit is under {HARD}")
    port = free_port()
    env = {**service_env("inmemory", prefix), "WEB_CONCURRENCY": "1", "BIND": f"127.0.0.1:{port}",
           "BACKLOG": str(BACKLOG)}
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app.main:app"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=lowered_limits)
    server = LiveServer(process, port, log, 1, env)
    try:
        wait_ready(server)
        (worker,) = server.worker_pids()
        assert open_file_limits(process.pid) == (HARD, HARD)
        assert open_file_limits(worker) == (HARD, HARD)
        assert server.logs().count(f"open-file limit {HARD} (was {SOFT})") == 1  # the master's, once
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert listen_backlog(port) == min(BACKLOG, somaxconn)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
