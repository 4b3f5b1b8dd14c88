"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` variables and off when they are unset.

On when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``) or an OTLP endpoint is
set (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and not
``OTEL_SDK_DISABLED=true``. Then HTTP requests (FastAPI), client WebSocket frames, layer sends and
deliveries (``app.channels.tracing``), job tasks (app/worker) and the database are traced; the service name
comes from ``OTEL_SERVICE_NAME``, the exporter's settings from its own ``OTEL_EXPORTER_OTLP_*``
variables. Needs the ``telemetry`` extra.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from .channels import tracing

logger = logging.getLogger("app.telemetry")
_configured = False


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configured() -> bool:
    return _configured


def configure(service_name: str = "chat") -> bool:
    """Install a tracer provider and turn layer tracing on, once per process; whether tracing is on."""
    global _configured
    if _configured or not wanted():
        return _configured
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError("OTEL_* asks for tracing: install the telemetry extra (pip install '.[telemetry]')") from exc
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name),
                                "service.instance.id": f"{socket.gethostname()}:{os.getpid()}"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    trace.set_tracer_provider(provider)
    tracing.enable()
    _configured = True
    logger.info("tracing on: %s", os.environ.get("OTEL_TRACES_EXPORTER", "otlp"))
    return True


def _exporter() -> Any:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise RuntimeError(f"OTEL_TRACES_EXPORTER={kind!r}: use otlp, console or none")
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", ""))
    if protocol.strip().lower() == "grpc":
        raise RuntimeError("OTEL_EXPORTER_OTLP_PROTOCOL=grpc: this service ships the http/protobuf exporter")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def instrument_app(app: Any) -> None:
    """HTTP spans for FastAPI routes; the WebSocket gets one span per frame instead of one per connection."""
    if not _configured:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="/ws,/healthz,/readyz,/metrics")


def instrument_engine(engine: Any) -> None:
    """Database spans for one SQLAlchemy engine (async engines: pass ``engine.sync_engine``)."""
    if not _configured:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().instrument(engine=engine)


def shutdown() -> None:
    """Flush spans before the process exits."""
    if not _configured:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()
