"""The compose topology run directly: two app replicas behind the stack's nginx config, one broker."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..brokers import distributed_backends, require_broker
from ..chat.client import ChatClient, clients_on_distinct_workers
from ..live_server import free_port, live_server, service_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def proxy_config(tmp: Path, listen: int, upstreams: list[int]) -> Path:
    """compose/nginx.conf with the compose DNS names swapped for the loopback replicas."""
    site = (ROOT / "compose" / "nginx.conf").read_text()
    site = re.sub(r"^resolver .*;$", "", site, flags=re.M)
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in upstreams)
    site = re.sub(r"upstream app \{.*?\}", "upstream app {\n" + servers + "}", site, flags=re.S)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "".join(f"    {kind}_temp_path {tmp}/{kind};\n" for kind in kinds)
    conf = tmp / "nginx.conf"
    conf.write_text(f"worker_processes 1;\nerror_log {tmp}/error.log;\npid {tmp}/nginx.pid;\nevents {{}}\n"
                    f"http {{\n    access_log off;\n{temp}{site}\n}}\n")
    return conf


@pytest.fixture
def nginx() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if path is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return path


@pytest.fixture
def proxy(nginx: str, tmp_path: Path, prefix: str) -> Iterator[tuple[str, str]]:
    backends = distributed_backends()
    if not backends:
        pytest.skip("no distributed backend kept")
    require_broker(backends[0])
    env = service_env(backends[0], prefix)
    with live_server(env, workers=1, tmp_path=tmp_path) as one, live_server(env, workers=1, tmp_path=tmp_path) as two:
        port = free_port()
        conf = proxy_config(tmp_path, port, [one.port, two.port])
        process = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"])
        try:
            deadline = time.monotonic() + 10
            while not (tmp_path / "nginx.pid").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}", one.login("proxy-user")
        finally:
            process.terminate()
            process.wait(10)


async def test_message_crosses_replicas_through_the_proxy(proxy: tuple[str, str]) -> None:
    url, token = proxy
    ws_url = url.replace("http", "ws") + "/ws"
    first, second = await clients_on_distinct_workers(ws_url, [token, token], origin=url)
    assert first.worker != second.worker
    await first.join("edge")
    await second.join("edge")
    await second.send(type="message", room="edge", text="through nginx")
    assert (await first.expect("message"))["text"] == "through nginx"
    for client in (first, second):
        await client.close()
    assert isinstance(first, ChatClient)
