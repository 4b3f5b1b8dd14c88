"""The manifests' contract with the app: a bake's rendered migration Job and web Deployment, their
commands and environment resolved as the kubelet resolves them (ConfigMap, Secrets, ``$(VAR)``
expansion), run the real migration and real gunicorn against real brokers on loopback.

Only the Service names become loopback addresses (and the database a private one); the Redis and
NATS servers are private instances that require the password the Secrets hold, so a URL composed
wrongly fails to connect.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Bake
from .test_k8s import find, kustomize, pod_spec

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def require(port: int, what: str) -> None:
    if not answers(port):
        message = f"{what} does not answer on 127.0.0.1:{port}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def server(command: list[str], port: int) -> Iterator[None]:
    """A private broker on ``port``, stopped (this process only) afterwards."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if answers(port):
                break
            assert process.poll() is None, f"{command[0]} exited with {process.returncode}"
            time.sleep(0.1)
        else:
            pytest.fail(f"{command[0]} did not listen on {port}")
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_healthy(url: str) -> None:
    """Until the JetStream cluster has its meta leader (the chart's readiness probe asks the same)."""
    for _ in range(300):
        with contextlib.suppress(OSError):
            if get(url)[0] == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"{url} never answered 200")


def resolve_env(container: dict[str, Any], configmaps: dict[str, dict[str, str]],
                secret_data: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env in order,
    ``$(NAME)`` expanded from what is defined before it."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
        else:
            env.update(secret_data[source["secretRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), item["value"])
        else:
            reference = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_data[reference["name"]][reference["key"]]
    return env


def on_loopback(env: dict[str, str], addresses: dict[str, str], database: str) -> dict[str, str]:
    """Service names replaced by the loopback servers, the database by a private one."""
    local = {}
    for name, value in env.items():
        value = value.replace("@chat-db-rw:5432/chat", f"@127.0.0.1:5432/{database}")
        for service, address in addresses.items():
            value = value.replace(f"@{service}", f"@{address}")
        local[name] = value
    return local


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@contextlib.contextmanager
def private_database() -> Iterator[str]:
    name = f"chat_k8s_{secrets.token_hex(4)}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=True, timeout=60)


@pytest.mark.parametrize("layer", ("redis", "rabbitmq", "nats", "postgresql"))
def test_manifests_run_the_app(layer: str, bake: Bake, tmp_path: Path) -> None:
    require(5432, "PostgreSQL")
    if layer == "rabbitmq":
        require(5672, "RabbitMQ")
    project = bake(channel_layer=layer, use_celery="no", keep_all_backends="no", web_workers="2")
    (project / ".env").unlink()  # the image has none (.dockerignore): only the manifests' environment
    docs = kustomize(project / "deploy/k8s/overlays" / layer)
    configmaps = {doc["metadata"]["name"]: doc["data"] for doc in docs if doc["kind"] == "ConfigMap"}
    password = secrets.token_hex(16)
    secret_data = {
        "chat-app": {"secret-key": secrets.token_urlsafe(48), "service-token": secrets.token_hex(32),
                     "channel-encryption-keys": secrets.token_urlsafe(32)},
        "chat-db-app": {"username": "postgres", "password": password},  # the shared server trusts loopback
        "chat-redis": {"redis-password": password},
        "chat-nats": {"password": password},
        "chat-rabbitmq-default-user": {"username": "guest", "password": "guest"},
    }
    redis_port, web_port = free_port(), free_port()
    nats_ports = [(free_port(), free_port(), free_port()) for _ in range(3)]  # client, cluster, monitor
    addresses = {"chat-redis-master:6379": f"127.0.0.1:{redis_port}", "chat-nats:4222": f"127.0.0.1:{nats_ports[0][0]}",
                 "chat-rabbitmq:5672": "127.0.0.1:5672"}
    brokers: dict[str, list[tuple[list[str], int]]] = {
        "redis": [(["redis-server", "--port", str(redis_port), "--requirepass", password, "--save", "",
                    "--appendonly", "no"], redis_port)],
        # three servers in one JetStream cluster, as the chart's values run them (the overlay asks for 3 replicas)
        "nats": [(["nats-server", "-n", f"nats-{i}", "-a", "127.0.0.1", "-p", str(client), "-m", str(monitor),
                   "-js", "-sd", str(tmp_path / f"nats-{i}"), "--user", "chat", "--pass", password,
                   "--cluster_name", "chat", "--cluster", f"nats://127.0.0.1:{cluster}",
                   "--routes", ",".join(f"nats://127.0.0.1:{other[1]}" for other in nats_ports if other[1] != cluster)],
                  client) for i, (client, cluster, monitor) in enumerate(nats_ports)],
    }
    with contextlib.ExitStack() as stack:
        for command, port in brokers.get(layer, []):
            stack.enter_context(server(command, port))
        if layer == "nats":
            for _, _, monitor in nats_ports:
                wait_healthy(f"http://127.0.0.1:{monitor}/healthz")
        database = stack.enter_context(private_database())
        base = {"PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}

        (migrate,) = pod_spec(find(docs, "Job", "chat-migrate"))["containers"]
        env = {**base, **on_loopback(resolve_env(migrate, configmaps, secret_data), addresses, database)}
        result = subprocess.run(migrate["command"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert password not in result.stdout + result.stderr

        spec = pod_spec(find(docs, "Deployment", "chat-web"))
        (web,) = spec["containers"]
        assert web["command"][:2] == ["tini", "--"]  # PID 1 in the image; here the test is the parent
        env = {**base, **on_loopback(resolve_env(web, configmaps, secret_data), addresses, database),
               "BIND": f"127.0.0.1:{web_port}", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
        log = (tmp_path / "web.log").open("w+")
        process = subprocess.Popen([*web["command"][2:], *web["args"]], cwd=project, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{web_port}"
            def log_tail() -> str:
                return (tmp_path / "web.log").read_text()[-3000:]

            for _ in range(600):  # the startup probe allows 2 minutes
                assert process.poll() is None, log_tail()
                with contextlib.suppress(OSError):
                    if get(f"{url}/healthz")[0] == 200:
                        break
                time.sleep(0.2)
            status, body = get(f"{url}/readyz")
            assert status == 200 and '"ok"' in body, f"{status} {body}\n{log_tail()}"
            status, body = get(f"{url}/metrics", secret_data["chat-app"]["service-token"])
            assert status == 200 and "chat_connections" in body, f"{status} {body[:500]}\n{log_tail()}"
            process.send_signal(signal.SIGTERM)  # the kubelet signals PID 1 (tini), which passes it to gunicorn
            code = process.wait(timeout=spec["terminationGracePeriodSeconds"] + 60)
            assert code == 0, log_tail()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()
        output = (tmp_path / "web.log").read_text()
        assert password not in output and secret_data["chat-app"]["secret-key"] not in output
