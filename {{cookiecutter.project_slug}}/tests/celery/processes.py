"""Real Celery worker and beat processes for the tests, and a TCP proxy that fakes a broker blip."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..live_server import ROOT


@dataclass
class CeleryProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.logs()))

    def wait_for(self, pattern: str, times: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(pattern) >= times:
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"celery exited with {self.process.returncode}:\n{self.logs()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{pattern!r} x{times} not in the celery log after {timeout}s:\n{self.logs()[-3000:]}")


@contextlib.contextmanager
def celery_process(args: list[str], env: dict[str, str], log: Path) -> Iterator[CeleryProcess]:
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "app.worker.celery_app", *args],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    running = CeleryProcess(process, log)
    try:
        yield running
    finally:
        # warm shutdown of the main process only: it stops its pool, whose processes close their layers
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@contextlib.contextmanager
def celery_worker(env: dict[str, str], tmp_path: Path, name: str, concurrency: int = 2) -> Iterator[CeleryProcess]:
    """``celery worker --pool=prefork -c N`` on the env's queue, ready when every pool process has its layer."""
    args = ["worker", "--pool=prefork", f"-c{concurrency}", "--loglevel=INFO", f"-n{name}@%h",
            "--without-mingle", "--without-gossip", "--without-heartbeat"]
    with celery_process(args, env, tmp_path / f"worker-{name}.log") as worker:
        worker.wait_for(r"layer bridge ready", times=concurrency)
        worker.wait_for(r"\bready\.")
        yield worker


@contextlib.contextmanager
def celery_beat(env: dict[str, str], tmp_path: Path) -> Iterator[CeleryProcess]:
    args = ["beat", "--loglevel=INFO", "-s", str(tmp_path / "beat-schedule"), "--pidfile="]
    with celery_process(args, env, tmp_path / "beat.log") as beat:
        yield beat


class TcpProxy:
    """A loopback TCP proxy to ``target``; ``down()`` refuses and cuts every connection until ``up()``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        for sock in [listener, *sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._stopped = True
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
