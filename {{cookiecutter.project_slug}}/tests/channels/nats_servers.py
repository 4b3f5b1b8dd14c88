"""Private nats-server processes for the NATS fault tests (never the shared server on 4222).

Each server gets a loopback port, a config file and a JetStream store under a temp dir, so a test
can kill -9 it and start it again on the same port and store. ``stop_all`` leaves no orphans.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def require_nats_server() -> None:
    """Skip without the binary on a laptop; fail under CI=true, where a skip would hide the tests."""
    if os.access(NATS_SERVER, os.X_OK):
        return
    message = f"nats-server binary not found at {NATS_SERVER}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: fault tests must not skip)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """One nats-server with JetStream; ``kill()`` is SIGKILL, ``start()`` reuses port and store."""

    def __init__(self, root: Path, name: str, *, max_payload: int | None = None, monitor: bool = False) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.cluster_port = free_port()
        self.max_payload = max_payload
        #: The HTTP monitoring port (``/connz``), or None.
        self.monitor_port = free_port() if monitor else None
        self.routes: list[int] = []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = [
            f"listen: 127.0.0.1:{self.port}",
            f"server_name: {self.name}",
            f'jetstream {{ store_dir: "{self.dir / "store"}" }}',
        ]
        if self.max_payload:
            lines.append(f"max_payload: {self.max_payload}")
        if self.monitor_port:
            lines.append(f"http: 127.0.0.1:{self.monitor_port}")
        if self.routes:
            routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.routes)
            lines.append(f"cluster {{ name: fws, listen: 127.0.0.1:{self.cluster_port}, routes: [{routes}] }}")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15) -> None:
        config = self.dir / "nats.conf"
        config.write_text(self._config())
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen([NATS_SERVER, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: {(self.dir / 'server.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"nats-server {self.name} did not listen on {self.port} within {timeout}s")

    def connection_names(self) -> list[str]:
        """The names of the clients connected now, from the monitoring endpoint (``monitor=True``)."""
        assert self.monitor_port, "start the server with monitor=True"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/connz?limit=1024", timeout=5) as answer:
            return [conn.get("name", "") for conn in json.load(answer).get("connections") or []]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None


def cluster(root: Path, size: int = 3) -> list[NatsServer]:
    """``size`` servers routed to each other (JetStream clustered, distinct stores); not started."""
    servers = [NatsServer(root, f"n{i}") for i in range(size)]
    for server in servers:
        server.routes = [other.cluster_port for other in servers if other is not server]
    return servers


def stop_all(servers: list[NatsServer]) -> None:
    for server in servers:
        server.kill()
