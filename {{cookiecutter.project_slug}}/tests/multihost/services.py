"""Brokers and the database on namespace hosts, every one of them with credentials.

A 3-node Redis Cluster and a 3-node NATS cluster (JetStream) over the broker hosts, one RabbitMQ
node and one PostgreSQL server on the database host. Each starts from the installed binaries in a
temporary directory, bound to its host's address; the shared loopback brokers are never touched.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .netns import Host

PASSWORD = secrets.token_urlsafe(16)  # one per test run: every broker and the database require it
REDIS_PORT, NATS_PORT, NATS_ROUTE_PORT, AMQP_PORT, PG_PORT = 7000, 4222, 6222, 5672, 5432


def wait_listening(host: Host, address: str, port: int, timeout: float = 60) -> None:
    """Until ``address:port`` accepts a TCP connection from ``host`` (bounded)."""
    deadline = time.monotonic() + timeout
    probe = ["bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}"]
    while True:
        try:
            host.check(probe, timeout=5)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {address}:{port} after {timeout}s") from None
            time.sleep(0.2)


@dataclass
class Brokers:
    """Where each backend finds its broker, as the app's environment variables."""

    redis_nodes: list[str]
    nats_servers: list[str]
    amqp_url: str
    database_dsn: str

    def layer_env(self, backend: str, prefix: str) -> dict[str, str]:
        if backend == "redis":
            # kombu cannot follow a Redis Cluster (app/worker asks for explicit URLs); the scenario queues
            # no job, so a Celery bake gets in-process transports here
            return {"FASTAPI_WEBSOCKETS_REDIS_URL": f"redis://:{PASSWORD}@{self.redis_nodes[0]}/0",
                    "FASTAPI_WEBSOCKETS_REDIS_CLUSTER": "true", "FASTAPI_WEBSOCKETS_REDIS_PREFIX": prefix,
                    "CELERY_BROKER_URL": "memory://", "CELERY_RESULT_BACKEND": "cache+memory://"}
        if backend == "nats":
            servers = ",".join(f"nats://chat:{PASSWORD}@{address}" for address in self.nats_servers)
            return {"FASTAPI_WEBSOCKETS_NATS_SERVERS": servers, "FASTAPI_WEBSOCKETS_NATS_PREFIX": prefix,
                    "FASTAPI_WEBSOCKETS_NATS_REPLICAS": "3"}
        if backend == "rabbitmq":
            return {"FASTAPI_WEBSOCKETS_RABBITMQ_URL": self.amqp_url, "FASTAPI_WEBSOCKETS_RABBITMQ_PREFIX": prefix}
        if backend == "postgresql":
            return {"FASTAPI_WEBSOCKETS_POSTGRESQL_DSN": self.database_dsn,
                    "FASTAPI_WEBSOCKETS_POSTGRESQL_SCHEMA": prefix, "FASTAPI_WEBSOCKETS_POSTGRESQL_POOL_SIZE": "3"}
        raise ValueError(backend)

    def create_database(self, host: Host, name: str) -> str:
        """A fresh database on the store's server; its SQLAlchemy URL."""
        host.check(["psql", self.database_dsn, "-q", "-c", f'DROP DATABASE IF EXISTS "{name}"',
                    "-c", f'CREATE DATABASE "{name}"'], timeout=30)
        return self.database_dsn.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{name}"


def start_redis_cluster(hosts: Sequence[Host], root: Path) -> list[str]:
    """Two nodes per host, three masters with a replica each on another host (redis-cli spreads
    replicas away from their master's address), so a host that drops off fails over."""
    nodes: list[tuple[Host, int]] = []
    for host in hosts:
        for port in (REDIS_PORT, REDIS_PORT + 1):
            directory = root / f"redis-{host.name}-{port}"
            directory.mkdir()
            host.run(["redis-server", "--bind", host.address, "--port", str(port), "--dir", str(directory),
                      "--save", "", "--appendonly", "no", "--cluster-enabled", "yes",
                      "--cluster-node-timeout", "2000", "--requirepass", PASSWORD, "--masterauth", PASSWORD],
                     log=directory / "server.log")
            nodes.append((host, port))
    for host, port in nodes:
        wait_listening(hosts[0], host.address, port)
    addresses = [f"{host.address}:{port}" for host, port in nodes]
    hosts[0].check(["redis-cli", "-a", PASSWORD, "--no-auth-warning", "--cluster", "create", *addresses,
                    "--cluster-replicas", "1", "--cluster-yes"], timeout=60)
    deadline = time.monotonic() + 60
    for host, port in nodes:
        while "cluster_state:ok" not in host.check(
            ["redis-cli", "-h", host.address, "-p", str(port), "-a", PASSWORD, "--no-auth-warning",
             "cluster", "info"], timeout=10).stdout:
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis cluster did not reach cluster_state:ok")
            time.sleep(0.2)
    return addresses


def start_nats_cluster(hosts: Sequence[Host], root: Path) -> list[str]:
    routes = ", ".join(f"nats-route://chat:{PASSWORD}@{h.address}:{NATS_ROUTE_PORT}" for h in hosts)
    for host in hosts:
        directory = root / f"nats-{host.name}"
        directory.mkdir()
        (directory / "nats.conf").write_text("\n".join([
            f"listen: {host.address}:{NATS_PORT}",
            f"server_name: {host.name}",
            f"authorization {{ user: chat, password: \"{PASSWORD}\" }}",
            f'jetstream {{ store_dir: "{directory / "store"}" }}',
            f"cluster {{ name: fws, listen: {host.address}:{NATS_ROUTE_PORT},"
            f" authorization {{ user: chat, password: \"{PASSWORD}\" }}, routes: [{routes}] }}",
        ]) + "\n")
        host.run([shutil.which("nats-server") or "/usr/sbin/nats-server", "-c", str(directory / "nats.conf")],
                 log=directory / "server.log")
    for host in hosts:
        wait_listening(hosts[0], host.address, NATS_PORT)
    servers = [f"{host.address}:{NATS_PORT}" for host in hosts]
    # a fresh cluster answers JetStream requests only once it has elected its meta leader
    probe = ("import asyncio, nats, sys\n"
             "async def main():\n"
             f"    nc = await nats.connect(servers=sys.argv[1:], user='chat', password='{PASSWORD}')\n"
             "    await nc.jetstream().account_info()\n"
             "    await nc.close()\n"
             "asyncio.run(main())\n")
    deadline = time.monotonic() + 60
    while True:
        try:
            hosts[0].check([sys.executable, "-c", probe, *(f"nats://{s}" for s in servers)], timeout=20)
            return servers
        except AssertionError:
            if time.monotonic() > deadline:
                raise TimeoutError("the NATS cluster's JetStream did not answer within 60 s") from None
            time.sleep(0.5)


def start_rabbitmq(host: Host, root: Path) -> str:
    directory = root / "rabbitmq"
    (directory / "home").mkdir(parents=True)
    (directory / "enabled_plugins").write_text("[].\n")
    (directory / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = {host.address}:{AMQP_PORT}\ndefault_user = chat\ndefault_pass = {PASSWORD}\n"
    )
    env = {
        "PATH": "/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/bin", "HOME": str(directory / "home"),
        "RABBITMQ_NODENAME": "rabbit@localhost", "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"), "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
        "RABBITMQ_PID_FILE": str(directory / "rabbit.pid"),
    }
    (directory / "rabbitmq-env.conf").write_text("")
    server = host.run(["/usr/lib/rabbitmq/bin/rabbitmq-server"], log=directory / "server.log", env=env)
    deadline = time.monotonic() + 120
    while True:  # await_startup answers at once while the node has not registered with epmd yet
        try:
            host.check(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", "rabbit@localhost", "await_startup",
                        "--timeout", "60"], timeout=90, env=env)
            break
        except AssertionError:
            if server.poll() is not None or time.monotonic() > deadline:
                log = (directory / "server.log").read_text()[-2000:]
                raise RuntimeError(f"RabbitMQ did not start: {log}") from None
            time.sleep(1)
    return f"amqp://chat:{PASSWORD}@{host.address}:{AMQP_PORT}/"


def start_postgresql(host: Host, root: Path) -> str:
    """A server that asks for a password (scram-sha-256) from the hosts' subnet."""
    import pwd

    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    directory = root / "postgresql"
    directory.mkdir()
    entry = pwd.getpwnam("postgres")
    password_file = directory / "password"
    password_file.write_text(PASSWORD + "\n")
    for path in (directory, password_file):
        shutil.chown(path, entry.pw_uid, entry.pw_gid)
    data = directory / "data"
    host.check([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "scram-sha-256",
                f"--pwfile={password_file}", "-E", "UTF8", "--locale=C", "--no-sync"], timeout=120, user="postgres")
    subnet = ".".join(host.address.split(".")[:3]) + ".0/24"
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {subnet} scram-sha-256\n")
    options = (f"-c listen_addresses={host.address} -p {PG_PORT} -c unix_socket_directories='' -c fsync=off"
               " -c max_connections=200 -c shared_buffers=32MB")
    host.check([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(directory / "server.log"), "-o", options,
                "-w", "-t", "60", "start"], timeout=90, user="postgres")
    return f"postgresql://postgres:{PASSWORD}@{host.address}:{PG_PORT}/postgres"


def start_all(broker_hosts: Sequence[Host], database_host: Host, root: Path, wanted: set[str]) -> Brokers:
    """The brokers of the ``wanted`` backends, and PostgreSQL (the app's store) always."""
    return Brokers(
        redis_nodes=start_redis_cluster(broker_hosts, root) if "redis" in wanted else [],
        nats_servers=start_nats_cluster(broker_hosts, root) if "nats" in wanted else [],
        amqp_url=start_rabbitmq(database_host, root) if "rabbitmq" in wanted else "",
        database_dsn=start_postgresql(database_host, root),
    )
