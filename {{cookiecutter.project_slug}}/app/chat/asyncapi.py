"""The WebSocket protocol as an AsyncAPI 3.0 document, generated from the frame models: the client
frames' pydantic models (protocol.py) and the server frames' TypedDicts (frames.py). Served at
``/asyncapi.json``; the README's protocol tables are rendered from the same source
(``python -m app.chat.asyncapi`` prints them; a test keeps the README in step).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter

from . import protocol
from .frames import SERVER_FRAMES

CLIENT_FRAMES: tuple[type[BaseModel], ...] = (
    protocol.Auth, protocol.Join, protocol.Leave, protocol.Say, protocol.Typing, protocol.Direct, protocol.Sync,
    protocol.ListRooms, protocol.Who, protocol.Ping, protocol.Share,
)
REF = "#/components/schemas/{model}"


def _name(frame: Any) -> str:
    return str(frame.__name__)


def _schema(frame: Any, defs: dict[str, Any]) -> dict[str, Any]:
    adapter: TypeAdapter[Any] = TypeAdapter(frame)
    schema = adapter.json_schema(ref_template=REF)
    defs.update(schema.pop("$defs", {}))
    return schema


def _doc(frame: Any) -> str:
    return " ".join((frame.__doc__ or "").split())


@cache
def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for frame in (*CLIENT_FRAMES, *SERVER_FRAMES):
        schemas[_name(frame)] = _schema(frame, schemas)
        messages[_name(frame)] = {
            "name": _name(frame), "title": _name(frame), "summary": _doc(frame), "contentType": "application/json",
            "payload": {"$ref": REF.format(model=_name(frame))},
        }

    def refs(frames: tuple[Any, ...]) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/chat/messages/{_name(frame)}"} for frame in frames]

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Chat WebSocket protocol",
            "version": "1.0.0",
            "description": ("Text frames are JSON objects with a `type`; frames queued for a busy socket arrive as "
                            "one JSON array, in order. The first client frame must be `auth`. Delivery contract "
                            "(seq, recovery, acks): docs/protocol.md."),
        },
        "servers": {"local": {"host": "127.0.0.1:8000", "protocol": "ws", "pathname": "/ws"}},
        "channels": {
            "chat": {"address": "/ws", "messages": {name: {"$ref": f"#/components/messages/{name}"}
                                                   for name in messages}},
        },
        "operations": {
            "clientSends": {"action": "receive", "channel": {"$ref": "#/channels/chat"},
                            "summary": "Frames the server accepts from a client.", "messages": refs(CLIENT_FRAMES)},
            "serverSends": {"action": "send", "channel": {"$ref": "#/channels/chat"},
                            "summary": "Frames the server sends a client.", "messages": refs(SERVER_FRAMES)},
        },
        "components": {"schemas": schemas, "messages": messages},
    }


def _shape(schema: dict[str, Any]) -> str:
    """``{"type": "join", "room": …, "since"?: …}``: the frame's fields, optional ones marked."""
    required = set(schema.get("required", ()))
    parts = []
    for field, spec in schema["properties"].items():
        value = json.dumps(spec["const"]) if "const" in spec else "…"
        parts.append(f'"{field}"{"" if field in required or "const" in spec else "?"}: {value}')
    return "{" + ", ".join(parts) + "}"


def markdown_tables() -> str:
    """The README's two protocol tables."""
    schemas = document()["components"]["schemas"]
    lines = ["| client → server | meaning |", "| --- | --- |"]
    lines += [f"| `{_shape(schemas[_name(f)])}` | {_doc(f)} |" for f in CLIENT_FRAMES]
    lines += ["", "| server → client | when |", "| --- | --- |"]
    lines += [f"| `{_shape(schemas[_name(f)])}` | {_doc(f)} |" for f in SERVER_FRAMES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_tables(), end="")
