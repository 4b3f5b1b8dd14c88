"""Private brokers behind one interface for the fault tests: kill -9 + restart, SIGSTOP + SIGCONT.

Each wraps the helper its backend's own tests use (tests/channels/*_servers.py and friends), so the
shared brokers are never touched: every signal goes to a process this module started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class PrivateBroker:
    config: dict[str, Any]
    kill: Callable[[], object]
    start: Callable[[], object]
    pids: Callable[[], list[int]]  # every process to SIGSTOP/SIGCONT
    group: bool = False  # pids()[0] leads a process group: signal the whole group

    def signal(self, sig: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                if self.group:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)


def _missing(what: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI=true: fault tests must not skip)")
    pytest.skip(what)


@contextlib.contextmanager
def private_broker(backend: str, tmp_path: Path) -> Iterator[PrivateBroker]:
    if backend == "redis":
        from ..channels.redis_servers import RedisServer, available

        if not available():
            _missing("redis-server is not installed")
        redis = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always").start()
        try:
            yield PrivateBroker({"url": redis.url}, redis.kill, redis.start,
                                lambda: [redis.process.pid] if redis.process else [])
        finally:
            if redis.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(redis.process.pid, signal.SIGCONT)
            redis.stop()
    elif backend == "postgresql":
        from ..channels.postgresql_cluster import _children, private_cluster

        with private_cluster() as cluster:

            def pids() -> list[int]:
                postmaster = cluster.postmaster_pid()
                return [postmaster, *_children(postmaster)] if postmaster else []

            try:
                yield PrivateBroker({"dsn": cluster.dsn}, cluster.kill, cluster.start, pids)
            finally:
                for pid in pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
    elif backend == "nats":
        from ..channels.nats_servers import NatsServer

        if not shutil.which("nats-server") and not Path("/usr/sbin/nats-server").exists():
            _missing("nats-server is not installed")
        nats = NatsServer(tmp_path, "n0")
        nats.start()
        try:
            yield PrivateBroker({"servers": [nats.url]}, nats.kill, nats.start,
                                lambda: [nats.process.pid] if nats.process else [])
        finally:
            if nats.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(nats.process.pid, signal.SIGCONT)
            nats.kill()
    elif backend == "rabbitmq":
        from ..channels.rabbitmq_node import PrivateRabbitMQ, available

        if not available():
            _missing("rabbitmq-server is not installed")
        node = PrivateRabbitMQ()
        try:
            node.start()
            yield PrivateBroker({"url": node.url}, node.kill, node.start,
                                lambda: [node.process.pid] if node.process and node.process.poll() is None else [],
                                group=True)
        finally:
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGCONT)
            node.cleanup()
    else:
        raise ValueError(backend)
