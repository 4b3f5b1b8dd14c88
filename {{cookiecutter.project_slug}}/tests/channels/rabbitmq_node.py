"""A private, throw-away RabbitMQ node for fault tests (never the shared one).

It runs from the installed binaries with its own node name, ports, cookie (``HOME``), data,
log and config directories in a temp dir, and no plugins. ``stop()`` and ``kill()`` only ever
touch the OS process this module started.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


def available() -> bool:
    return os.path.exists(SERVER) and os.path.exists(CTL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRabbitMQ:
    """One private node: ``start()``, ``stop()``/``kill()``, ``start()`` again, ``cleanup()``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rmqtest-"))
        self.node = f"rmqtest-{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.process: subprocess.Popen[bytes] | None = None
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "home").mkdir()
        self.env = {
            **os.environ,
            "HOME": str(self.dir / "home"),  # a fresh Erlang cookie, not the shared node's
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbit.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [CTL, "-n", self.node, *args], env=self.env, capture_output=True, timeout=timeout, check=False
        )

    def connection_names(self) -> list[str]:
        """The client-given names (``connection_name``) of the node's open connections."""
        result = self._ctl("-q", "list_connections", "client_properties")
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl list_connections failed: {result.stderr!r}")
        return re.findall(r'\{"connection_name","([^"]*)"\}', result.stdout.decode())

    def start(self, timeout: float = 90) -> None:
        assert self.process is None or self.process.poll() is not None, "node already running"
        log = (self.dir / "server.out").open("ab")
        self.process = subprocess.Popen(
            [SERVER], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while True:
            result = self._ctl("await_startup", "--timeout", "30", timeout=40)
            if result.returncode == 0:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                out = (self.dir / "server.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"private RabbitMQ node did not start: {result.stderr!r}\n{out}")
            time.sleep(1)

    def stop(self, timeout: float = 60) -> None:
        """Graceful stop (clients see a connection close), bounded; falls back to kill."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self._ctl("stop", timeout=timeout)
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the node's process group (only the processes this object started)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def cleanup(self) -> None:
        try:
            self.stop(timeout=30)
        finally:
            self.kill()
            shutil.rmtree(self.dir, ignore_errors=True)
