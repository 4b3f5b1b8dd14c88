"""Error reporting against a Sentry ingest endpoint this test serves on loopback: a real gunicorn
worker reports a failing handler and an error log, and nothing a user typed leaves with them."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.channels.config import build_layer
from app.chat.protocol import user_group

from .brokers import distributed_backends, layer_config, require_broker
from .chat.client import ChatClient
from .live_server import live_server, service_env

pytestmark = pytest.mark.slow
SECRET_TEXT = "what-alice-typed-" + "7" * 8


class Ingest(ThreadingHTTPServer):
    """Keeps the raw body of every envelope posted to ``/api/<project>/envelope/``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[bytes] = []

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server_address[1]}/42"

    def events(self) -> list[dict[str, Any]]:
        found = []
        for body in list(self.bodies):
            _envelope_header, *items = body.split(b"\n")
            for kind, payload in zip(items[::2], items[1::2], strict=False):
                if json.loads(kind).get("type") == "event":
                    found.append(json.loads(payload))
        return found


class _Handler(BaseHTTPRequestHandler):
    server: Ingest

    def do_POST(self) -> None:  # the http.server naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]

            body = brotli.decompress(body)
        self.server.bodies.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    server = Ingest()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.mark.parametrize("backend", distributed_backends()[:1])
async def test_handler_errors_are_reported_without_user_text(
    backend: str, prefix: str, tmp_path: Path, ingest: Ingest
) -> None:
    require_broker(backend)
    env = service_env(backend, prefix, SENTRY_DSN=ingest.dsn, SENTRY_ENVIRONMENT="test")
    with live_server(env, workers=1, tmp_path=tmp_path) as server:
        alice = await ChatClient.connect(server.ws_url, server.login("alice"))
        layer = build_layer(backend, layer_config(backend, prefix))
        try:  # a chat.message missing its fields makes the handler fail; one without type is an error log
            await layer.group_send(user_group("alice"), {"type": "chat.message", "text": SECRET_TEXT})
            await layer.group_send(user_group("alice"), {"text": SECRET_TEXT})
            async with asyncio.timeout(20):
                while len(ingest.events()) < 2:  # noqa: ASYNC110 - the ingest thread has no event to await
                    await asyncio.sleep(0.2)
        finally:
            await layer.close()
        await alice.send(type="ping")
        assert (await alice.expect("pong"))["type"] == "pong"  # the socket lived through both
        await alice.close()
    events = ingest.events()
    failed = [e for e in events if e.get("exception")]
    assert failed and failed[0]["exception"]["values"][-1]["type"] in ("KeyError", "TypeError")
    assert any("without a str 'type' key" in (e.get("logentry") or {}).get("message", "") for e in events)
    assert all(e.get("environment") == "test" for e in events)
    raw = b"".join(ingest.bodies)
    assert SECRET_TEXT.encode() not in raw
    assert all("user" not in e and "request" not in e for e in events)  # no user context, no request data
