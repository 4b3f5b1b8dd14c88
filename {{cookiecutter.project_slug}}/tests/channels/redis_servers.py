"""Private redis-server processes for the Redis tests: single servers, a 3-master cluster, a sentinel.

Each server runs from the installed binaries on a free loopback port in a temporary directory,
and every wait is bounded. The shared broker on 6379 is never touched.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "redis-server"
REDIS_CLI = shutil.which("redis-cli") or "redis-cli"


def available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(bus: bool = False) -> int:
    """A free loopback port (and, for cluster nodes, a free bus port at +10000)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not bus or (port + 10000 < 65536 and _port_free(port + 10000)):
            return port
    raise RuntimeError("no free port")


def cli(port: int, *args: str, timeout: float = 5) -> str:
    done = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    return done.stdout


class RedisServer:
    """One redis-server; ``kill()`` is kill -9, ``start()`` brings it back on the same port."""

    def __init__(self, directory: Path, *extra: str, port: int | None = None, sentinel: bool = False) -> None:
        self.port = port or free_port(bus="--cluster-enabled" in extra)
        self.dir = directory / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = extra
        self.sentinel = sentinel
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if self.sentinel:
            conf = self.dir / "sentinel.conf"
            conf.write_text("\n".join((f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}", *self.extra)) + "\n")
            args = [REDIS_SERVER, str(conf), "--sentinel"]
        else:
            args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                    "--save", "", "--protected-mode", "no", *self.extra]
        log = (self.dir / "server.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'server.log').read_text()[-2000:]}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                if cli(self.port, "ping", timeout=2).strip() == "PONG":
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server on {self.port} did not answer in 15 s")

    def kill(self) -> None:
        """kill -9, and wait for the process to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@contextlib.contextmanager
def servers(directory: Path, count: int, *extra: str) -> Iterator[list[RedisServer]]:
    started: list[RedisServer] = []
    try:
        for _ in range(count):
            started.append(RedisServer(directory, *extra).start())
        yield started
    finally:
        for server in started:
            server.stop()


@contextlib.contextmanager
def cluster(directory: Path, masters: int = 3) -> Iterator[list[RedisServer]]:
    """``masters`` cluster-enabled servers joined with ``redis-cli --cluster create``; slots all covered."""
    extra = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
             "--appendonly", "no")
    with servers(directory, masters, *extra) as nodes:
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run([REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                       capture_output=True, timeout=30, check=True)
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in cli(node.port, "cluster", "info") for node in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the private Redis cluster did not reach cluster_state:ok in 30 s")
            time.sleep(0.1)
        yield nodes
