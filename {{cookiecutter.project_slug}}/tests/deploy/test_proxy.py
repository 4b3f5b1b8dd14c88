"""The compose topology run directly: two app replicas behind the stack's nginx config, one broker.

Real nginx (Debian's nginx-light) runs compose/nginx.conf with the compose DNS names swapped for the
loopback replicas; what reaches a client and what reaches the proxy's log is asserted.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from ..brokers import distributed_backends, require_broker
from ..chat.client import ChatClient, clients_on_distinct_workers
from ..e2e.conftest import CHROMIUM, CHROMIUM_ARGS, in_ci
from ..live_server import LiveServer, free_port, live_server, service_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
CSP = "default-src 'self'; img-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"
#: Records every CSP violation the page reports, before the page's own script runs.
VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (event) => window.__csp.push(`${event.violatedDirective} ${event.blockedURI}`));
"""


def proxy_config(tmp: Path, listen: int, upstreams: list[int]) -> Path:
    """compose/nginx.conf with the compose DNS names swapped for the loopback replicas."""
    site = (ROOT / "compose" / "nginx.conf").read_text()
    site = re.sub(r"^resolver .*;$", "", site, flags=re.M)
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in upstreams)
    site = re.sub(r"upstream app \{.*?\}", "upstream app {\n" + servers + "}", site, flags=re.S)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    site = site.replace("access_log /dev/stdout chat;", f"access_log {tmp}/access.log chat;")
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "".join(f"    {kind}_temp_path {tmp}/{kind};\n" for kind in kinds)
    conf = tmp / "nginx.conf"
    conf.write_text(f"worker_processes 1;\nerror_log {tmp}/error.log;\npid {tmp}/nginx.pid;\nevents {{}}\n"
                    f"http {{\n    access_log off;\n{temp}{site}\n}}\n")
    return conf


@dataclass
class Proxy:
    url: str
    token: str
    replicas: list[LiveServer]
    access_log: Path

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """``(status, headers, body)`` of one GET through nginx."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def nginx() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if path is None:
        if in_ci():
            pytest.fail("nginx is not installed (apt-get install nginx-light)")
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return path


@pytest.fixture
def proxy(nginx: str, tmp_path: Path, prefix: str) -> Iterator[Proxy]:
    backend = next(iter(distributed_backends()), "inmemory")  # the inmemory stack: one replica
    require_broker(backend)
    env = service_env(backend, prefix)
    with contextlib.ExitStack() as replicas:
        servers = [replicas.enter_context(live_server(env, workers=1, tmp_path=tmp_path))
                   for _ in range(1 if backend == "inmemory" else 2)]
        one = servers[0]
        port = free_port()
        conf = proxy_config(tmp_path, port, [server.port for server in servers])
        process = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"])
        try:
            deadline = time.monotonic() + 10
            while not (tmp_path / "nginx.pid").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            yield Proxy(f"http://127.0.0.1:{port}", one.login("proxy-user"), servers, tmp_path / "access.log")
        finally:
            process.terminate()
            process.wait(10)


async def test_message_crosses_replicas_through_the_proxy(proxy: Proxy) -> None:
    if len(proxy.replicas) < 2:
        pytest.skip("the in-memory layer runs one replica: nothing to cross")
    ws_url = proxy.url.replace("http", "ws") + "/ws"
    first, second = await clients_on_distinct_workers(ws_url, [proxy.token, proxy.token], origin=proxy.url)
    assert first.worker != second.worker
    await first.join("edge")
    await second.join("edge")
    await second.send(type="message", room="edge", text="through nginx")
    assert (await first.expect("message"))["text"] == "through nginx"
    for client in (first, second):
        await client.close()
    assert isinstance(first, ChatClient)


def test_security_headers_on_every_response(proxy: Proxy) -> None:
    for path in ("/", "/static/app.js", "/healthz", "/no-such-page", "/metrics"):
        status, headers, _ = proxy.get(path)
        assert headers.get("Content-Security-Policy") == CSP, (path, status)
        assert headers.get("X-Content-Type-Options") == "nosniff", path
        assert headers.get("Referrer-Policy") == "no-referrer", path
        assert "Strict-Transport-Security" not in headers, "HSTS only over TLS"
        assert "nginx/" not in headers.get("Server", ""), "no version in the Server header"


def test_metrics_stay_behind_the_proxy(proxy: Proxy) -> None:
    for path in ("/metrics", "/metrics/", "/metrics?format=text", "//metrics", "/%6Detrics", "/static/../metrics"):
        status, _, body = proxy.get(path)
        assert status == 404 and b"# HELP" not in body, path
    direct = urllib.request.Request(proxy.replicas[0].url + "/metrics")
    try:
        status = urllib.request.urlopen(direct, timeout=10).status
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status != 404, "each replica still serves /metrics to Prometheus on the compose network"


def test_access_log_has_no_query_string(proxy: Proxy) -> None:
    status, _, _ = proxy.get("/healthz?token=query-secret-123&next=%2Fa")
    assert status == 200
    deadline = time.monotonic() + 5
    while "/healthz" not in (proxy.access_log.read_text() if proxy.access_log.exists() else ""):
        assert time.monotonic() < deadline, "nginx logged no request"
        time.sleep(0.05)
    log = proxy.access_log.read_text()
    assert '"GET /healthz HTTP/1.1" 200' in log
    assert "query-secret-123" not in log and "token=" not in log and "?" not in log


def test_page_loads_and_connects_under_the_csp(proxy: Proxy) -> None:
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set E2E_CHROMIUM)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_init_script(VIOLATIONS)
            loaded: dict[str, int] = {}
            errors: list[str] = []
            context.on("response", lambda response: loaded.__setitem__(response.url, response.status))
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.extend([message.text] * ("Content Security" in message.text)))
            page.goto(proxy.url, wait_until="load")
            styled = page.evaluate("getComputedStyle(document.body).fontFamily")
            opened = page.evaluate("""() => new Promise((resolve) => {
              const socket = new WebSocket(location.origin.replace("http", "ws") + "/ws");
              socket.onopen = () => { socket.close(); resolve("open"); };
              socket.onerror = () => resolve("error");
            })""")  # connect-src 'self' covers the page's own ws:// origin
            violations = page.evaluate("window.__csp")
        finally:
            browser.close()
    assert violations == [] and errors == [], (violations, errors)
    assert loaded.get(f"{proxy.url}/static/app.js") == 200 and loaded.get(f"{proxy.url}/static/style.css") == 200
    assert styled and "Times" not in styled, "the stylesheet applied"
    assert opened == "open"
