"""A private, throwaway PostgreSQL cluster for fault tests (never the shared server).

``initdb`` in a temp dir, ``pg_ctl start`` on a free loopback port, ``kill()`` sends SIGKILL to the
postmaster (a crash), ``start()`` again runs crash recovery. initdb and postgres refuse to run as
root, so under root every command runs as the ``postgres`` OS user via ``runuser``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_USER = "postgres"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    return str(candidates[0]) if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


class PrivateCluster:
    """One temporary cluster; use :func:`private_cluster` so it is always torn down."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if not (self.initdb and self.pg_ctl and _binary("postgres")):
            raise FileNotFoundError("initdb/pg_ctl/postgres not found")
        self.as_root = os.geteuid() == 0
        if self.as_root and not (shutil.which("runuser") and _user_exists(PG_USER)):
            raise FileNotFoundError("running as root needs runuser and a 'postgres' OS user")
        self.root = Path(tempfile.mkdtemp(prefix="channels-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if self.as_root:
            entry = pwd.getpwnam(PG_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", PG_USER, "--", *args] if self.as_root else list(args)
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root)

    def init(self) -> None:
        assert self.initdb is not None
        result = self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                           "--locale=C", "--no-sync", timeout=120)
        if result.returncode:
            raise RuntimeError(f"initdb failed: {result.stderr}")

    def start(self) -> None:
        assert self.pg_ctl is not None
        # TCP on loopback only: no Unix socket whose lock file a killed postmaster would leave behind
        options = (f"-p {self.port} -c unix_socket_directories='' -c listen_addresses=127.0.0.1 -c fsync=off"
                   " -c max_connections=40 -c shared_buffers=16MB")
        result = self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                           "-w", "-t", "60", "start", timeout=90)
        if result.returncode:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}\n{log[-2000:]}")

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def kill(self, timeout: float = 15) -> None:
        """SIGKILL the postmaster, as a crash would; its backends exit when they notice."""
        pid = self.postmaster_pid()
        if pid is None or not _alive(pid):
            return
        children = _children(pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in (pid, *children)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in children:  # only this cluster's own processes, recorded before the kill
            if _alive(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        # A killed postmaster stays a zombie until init reaps it, and a zombie still "owns" the pid
        # in the lock file. It is dead, so the lock file is stale.
        with contextlib.suppress(FileNotFoundError):
            (self.data / "postmaster.pid").unlink()

    def destroy(self) -> None:
        if self.pg_ctl is not None and self.data.exists() and self.postmaster_pid() is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "-t", "20", "stop", timeout=30)
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started private cluster, destroyed afterwards; skips (fails under CI=true) without the binaries."""
    try:
        cluster = PrivateCluster()
    except FileNotFoundError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"cannot create a private PostgreSQL cluster: {exc}")
        pytest.skip(f"cannot create a private PostgreSQL cluster: {exc}")
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
