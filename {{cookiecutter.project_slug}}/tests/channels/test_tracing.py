"""Trace context through the layer, on every backend: a send and its deliveries are one trace."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.channels import InvalidMessage, tracing

from ..conftest import LayerFactory

EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):  # set once per process
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    tracing.enable()
    EXPORTER.clear()
    try:
        yield EXPORTER
    finally:
        tracing.disable()


async def test_group_send_and_its_deliveries_are_one_trace(
    make_layer: LayerFactory, backend: str, spans: InMemorySpanExporter
) -> None:
    sender = make_layer()
    receiver = sender if backend == "inmemory" else make_layer()
    channels = [await receiver.new_channel(), await receiver.new_channel()]
    for channel in channels:
        await receiver.group_add("traced", channel)
    with trace.get_tracer("test").start_as_current_span("request"):
        await sender.group_send("traced", {"type": "chat.message", "text": "hi"})
    for channel in channels:
        async with asyncio.timeout(10):  # in this task, as a consumer's reader receives (not wait_for's task)
            message = await receiver.receive(channel)
        assert message == {"type": "chat.message", "text": "hi"}  # the context is not the caller's business
        with tracing.delivery(message["type"]):
            pass
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        by_name.setdefault(span.name, []).append(span)
    (request,) = by_name["request"]
    (produced,) = by_name["group_send traced"]
    deliveries = by_name["deliver chat.message"]
    assert len(deliveries) == 2
    assert produced.parent is not None and produced.parent.span_id == request.context.span_id
    for delivery in deliveries:
        assert delivery.context.trace_id == request.context.trace_id
        assert delivery.parent is not None and delivery.parent.span_id == produced.context.span_id


async def test_send_carries_the_context_and_callers_cannot_forge_it(
    make_layer: LayerFactory, spans: InMemorySpanExporter
) -> None:
    layer = make_layer()
    original = {"type": "m"}
    with trace.get_tracer("test").start_as_current_span("request"):
        await layer.send("test.traced", original)
    assert original == {"type": "m"}  # the sender's dict is left alone
    assert await asyncio.wait_for(layer.receive("test.traced"), 10) == {"type": "m"}
    with pytest.raises(InvalidMessage):
        await layer.send("test.traced", {"type": "m", tracing.TRACE_KEY: {"traceparent": "forged"}})


async def test_untraced_messages_cost_no_span(make_layer: LayerFactory) -> None:
    """With tracing off nothing is attached: a message arrives as sent."""
    assert not tracing.enabled
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "m", "n": 1})
    assert await asyncio.wait_for(layer.receive(channel), 10) == {"type": "m", "n": 1}
