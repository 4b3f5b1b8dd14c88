"""Tracing across real gunicorn workers and a real broker, exported over OTLP/HTTP to a receiver
this test serves on loopback: a message posted on one worker and delivered on another is one trace."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from app import telemetry

from .brokers import distributed_backends, require_broker
from .chat.client import clients_on_distinct_workers
from .live_server import live_server, service_env

pytestmark = pytest.mark.slow


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace endpoint: keeps every span it is sent, with its service instance."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.server.spans.append({
                            "name": span.name, "trace": span.trace_id.hex(), "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(), "instance": resource.get("service.instance.id"),
                        })
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_tracing_is_off_unless_otel_variables_ask() -> None:
    assert not telemetry.wanted({})
    assert telemetry.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert telemetry.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not telemetry.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert not telemetry.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})


@pytest.mark.parametrize("backend", distributed_backends()[:1])  # one real broker is enough here
async def test_a_message_and_its_deliveries_on_other_workers_are_one_trace(
    backend: str, prefix: str, tmp_path: Path, receiver: Receiver
) -> None:
    require_broker(backend)
    env = service_env(backend, prefix, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                      OTEL_SERVICE_NAME="chat-test", OTEL_BSP_SCHEDULE_DELAY="100")
    with live_server(env, workers=2, tmp_path=tmp_path) as server:
        alice, bob = await clients_on_distinct_workers(server.ws_url, [server.login("alice"), server.login("bob")])
        await alice.join("traced")
        await bob.join("traced")
        await alice.send(type="message", room="traced", text="follow me")
        assert (await bob.expect("message"))["text"] == "follow me"
        await alice.expect("message")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with receiver.lock:
                spans = list(receiver.spans)
            sends = [s for s in spans if s["name"] == "group_send room.traced"]
            if sends and len([s for s in spans if s["trace"] == sends[-1]["trace"]
                              and s["name"] == "deliver chat.message"]) >= 2:
                break
            await asyncio.sleep(0.2)
        logs = server.logs()
    (send,) = [s for s in spans if s["name"] == "group_send room.traced"]
    trace = [s for s in spans if s["trace"] == send["trace"]]
    deliveries = [s for s in trace if s["name"] == "deliver chat.message"]
    assert {s["parent"] for s in deliveries} == {send["id"]}, trace
    assert len({s["instance"] for s in deliveries}) == 2  # delivered on both workers, in the sender's trace
    frames = [s for s in trace if s["name"].startswith("websocket frame")]
    assert frames and send["parent"] == frames[0]["id"]  # the client frame that caused the send
    assert any(s["name"].startswith(("POST /api/login", "POST /api/signup")) for s in spans)  # HTTP spans
    assert "follow me" not in str(spans) and "Traceback" not in logs
