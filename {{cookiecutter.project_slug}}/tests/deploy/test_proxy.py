"""The compose topology run directly: two app replicas behind the stack's nginx config, one broker.

Real nginx (Debian's nginx-light) runs compose/nginx-main.conf and its site compose/nginx.conf with
the image's paths moved to the test's folder, the compose DNS names swapped for the loopback replicas
and a certificate from a local CA (trustme) for 127.0.0.1: TLS on one port, the redirecting plain
HTTP on another; what reaches a client and what reaches the proxy's log is asserted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.sync_api import sync_playwright

from ..brokers import distributed_backends, require_broker
from ..chat.client import ChatClient, clients_on_distinct_workers
from ..e2e.chat_page import ChatPage
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


def proxy_config(tmp: Path, ports: tuple[int, int], upstreams: list[int], certs: Path) -> Path:
    """compose/nginx.conf with the compose DNS names swapped for the loopback replicas, its two ports
    ``(https, http)`` on loopback and the mounted folders (certificates, ACME webroot) under ``tmp``,
    included from compose/nginx-main.conf with the image's paths under ``tmp``."""
    site = (ROOT / "compose" / "nginx.conf").read_text()
    site = re.sub(r"^resolver .*;$", "", site, flags=re.M)
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in upstreams)
    site = re.sub(r"upstream app \{.*?\}", "upstream app {\n" + servers + "}", site, flags=re.S)
    for old, new in (("listen 443 ssl backlog=4096;", f"listen 127.0.0.1:{ports[0]} ssl backlog=4096;"),
                     ("listen 80;", f"listen 127.0.0.1:{ports[1]};"), ("/etc/nginx/certs/", f"{certs}/"),
                     ("root /var/www/acme;", f"root {tmp}/acme;"),
                     ("access_log /dev/stdout chat;", f"access_log {tmp}/access.log chat;")):
        assert old in site, old
        site = site.replace(old, new)
    (tmp / "site.conf").write_text(site)
    main = (ROOT / "compose" / "nginx-main.conf").read_text()
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "".join(f"    {kind}_temp_path {tmp}/{kind};\n" for kind in kinds)
    user = "user root;" if os.geteuid() == 0 else ""  # root's workers run as nobody: tmp (0700) unreadable
    for old, new in (("user nginx;", user), ("pid /run/nginx.pid;", f"pid {tmp}/nginx.pid;"),
                     ("error_log /var/log/nginx/error.log notice;", f"error_log {tmp}/error.log;"),
                     ("    include /etc/nginx/conf.d/*.conf;", f"{temp}    include {tmp}/site.conf;")):
        assert old in main, old
        main = main.replace(old, new)
    conf = tmp / "nginx.conf"
    conf.write_text(main)
    return conf


def spki_sha256(pem: bytes) -> str:
    """Base64 SHA-256 of a certificate's public key: what Chromium's SPKI allow-list names."""
    key = x509.load_pem_x509_certificate(pem).public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(key).digest()).decode()


@dataclass
class Proxy:
    url: str  # https://127.0.0.1:<port>
    http_port: int
    token: str
    replicas: list[LiveServer]
    access_log: Path
    tls: ssl.SSLContext  # trusts only the test CA
    ca_pem: str
    spki: str  # the served leaf's pin

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """``(status, headers, body)`` of one GET through nginx over TLS."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=10, context=self.tls) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get_plain(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """One GET on the plain HTTP port, redirects not followed."""
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, dict(response.headers), response.read()
        finally:
            connection.close()


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
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    certs = tmp_path / "certs"  # compose/certs: fullchain.pem and privkey.pem
    certs.mkdir()
    (certs / "fullchain.pem").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(certs / "privkey.pem"))
    (tmp_path / "acme" / ".well-known" / "acme-challenge").mkdir(parents=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name, against the test CA only
    ca.configure_trust(tls)
    with contextlib.ExitStack() as replicas:
        servers = [replicas.enter_context(live_server(env, workers=1, tmp_path=tmp_path))
                   for _ in range(1 if backend == "inmemory" else 2)]
        one = servers[0]
        https_port, http_port = free_port(), free_port()
        conf = proxy_config(tmp_path, (https_port, http_port), [server.port for server in servers], certs)
        process = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"])
        try:
            deadline = time.monotonic() + 10
            while not (tmp_path / "nginx.pid").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            yield Proxy(f"https://127.0.0.1:{https_port}", http_port, one.login("proxy-user"), servers,
                        tmp_path / "access.log", tls, ca.cert_pem.bytes().decode(),
                        spki_sha256(leaf.cert_chain_pems[0].bytes()))
        finally:
            process.terminate()
            process.wait(10)


def test_tls_chain_verifies_against_the_ca_and_is_modern(proxy: Proxy) -> None:
    port = int(proxy.url.rsplit(":", 1)[1])
    for name in ("127.0.0.1", "localhost"):
        with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=10)) as raw, \
                proxy.tls.wrap_socket(raw, server_hostname=name) as sock:
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
            der = sock.getpeercert(binary_form=True)
            assert der and spki_sha256(ssl.DER_cert_to_PEM_cert(der).encode()) == proxy.spki
    tls12 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls12.load_verify_locations(cadata=proxy.ca_pem)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=10)) as raw, \
            tls12.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert sock.version() == "TLSv1.2"
    untrusting = ssl.create_default_context()  # the system's CAs only: the test CA is not among them
    with pytest.raises(ssl.SSLCertVerificationError), \
            contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=10)) as raw:
        untrusting.wrap_socket(raw, server_hostname="127.0.0.1")


def test_plain_http_redirects_to_https_except_acme_challenges(proxy: Proxy, tmp_path: Path) -> None:
    for path in ("/", "/static/app.js?v=1", "/metrics", "/ws"):
        status, headers, _ = proxy.get_plain(path)
        assert status == 301, path
        assert headers["Location"] == f"https://127.0.0.1{path}", "to the default https port"
        assert "Strict-Transport-Security" not in headers, "HSTS only over TLS"
    (tmp_path / "acme" / ".well-known" / "acme-challenge" / "token-1").write_text("token-1.thumbprint")
    status, headers, body = proxy.get_plain("/.well-known/acme-challenge/token-1")
    assert (status, body) == (200, b"token-1.thumbprint")
    assert "Strict-Transport-Security" not in headers


async def test_message_crosses_replicas_through_the_proxy(proxy: Proxy) -> None:
    if len(proxy.replicas) < 2:
        pytest.skip("the in-memory layer runs one replica: nothing to cross")
    ws_url = proxy.url.replace("https", "wss") + "/ws"
    first, second = await clients_on_distinct_workers(ws_url, [proxy.token, proxy.token], origin=proxy.url,
                                                      ssl=proxy.tls)
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
        assert headers.get("Strict-Transport-Security") == "max-age=63072000; includeSubDomains", path
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


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set E2E_CHROMIUM)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


def pinned(proxy: Proxy) -> list[str]:
    """Chromium's arguments trusting only the served leaf (its key's pin), not any certificate error."""
    return [*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={proxy.spki}"]


def test_chat_round_trip_over_https_and_wss(proxy: Proxy) -> None:
    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=pinned(proxy))
        try:
            chats: list[ChatPage] = []
            for name in ("alice-tls", "bob-tls"):
                chat = ChatPage(browser.new_context().new_page(), proxy.replicas[0], name)
                chat.page.on("websocket", chat._on_socket)
                response = chat.page.goto(proxy.url)
                assert response is not None and response.status == 200
                assert response.headers["strict-transport-security"].startswith("max-age=")
                chat.sign_in(name)
                chat.join("tls-room")
                chats.append(chat)
            alice, bob = chats
            alice.say("sealed in transit")
            bob.expect_item("message", "alice-tls", "sealed in transit")
            urls = {opened.url for chat in chats for opened in chat.sockets}
            assert urls == {proxy.url.replace("https", "wss") + "/ws"}, urls
        finally:
            browser.close()


def test_page_loads_and_connects_under_the_csp(proxy: Proxy) -> None:
    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=pinned(proxy))
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
            })""")  # connect-src 'self' covers the page's own wss:// origin
            violations = page.evaluate("window.__csp")
        finally:
            browser.close()
    assert violations == [] and errors == [], (violations, errors)
    assert loaded.get(f"{proxy.url}/static/app.js") == 200 and loaded.get(f"{proxy.url}/static/style.css") == 200
    assert styled and "Times" not in styled, "the stylesheet applied"
    assert opened == "open"
