"""The AsyncAPI document: valid AsyncAPI 3.0 (the official JSON Schema from @asyncapi/specs), true to the
frames the server really builds and accepts, served at /asyncapi.json, and the source of the README's tables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from app.chat import protocol
from app.chat.asyncapi import CLIENT_FRAMES, document, markdown_tables
from app.chat.frames import SERVER_FRAMES
from app.chat.presence import PresenceChange

ROOT = Path(__file__).resolve().parents[2]
SPECS_VERSION = "6.11.1"


@pytest.fixture(scope="module")
def asyncapi_schema() -> dict[str, Any]:
    """AsyncAPI 3.0.0's JSON Schema, from the npm package the AsyncAPI initiative publishes (cached)."""
    home = Path(os.environ.get("ASYNCAPI_SPECS_DIR", Path.home() / ".cache" / "asyncapi-specs" / SPECS_VERSION))
    schema = home / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0-without-$id.json"
    if not schema.exists():
        npm = shutil.which("npm")
        if npm is None:
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail("npm is needed to fetch the AsyncAPI JSON Schema (CI=true: no skip)")
            pytest.skip("npm is needed to fetch the AsyncAPI JSON Schema")
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(home), "--no-audit", "--no-fund", "--silent",
                        f"@asyncapi/specs@{SPECS_VERSION}"], check=True, timeout=300, capture_output=True)
    loaded: dict[str, Any] = json.loads(schema.read_text())
    return loaded


def validator_for(name: str) -> jsonschema.Draft202012Validator:
    components = document()["components"]
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": components})


def test_the_document_is_valid_asyncapi_3(asyncapi_schema: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(asyncapi_schema).validate(document())
    broken = {**document(), "operations": {"x": {"action": "shout", "channel": {"$ref": "#/channels/chat"}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(asyncapi_schema).validate(broken)


def test_every_frame_is_described_once() -> None:
    messages = document()["components"]["messages"]
    assert set(messages) == {frame.__name__ for frame in (*CLIENT_FRAMES, *SERVER_FRAMES)}
    assert all(message["summary"] for message in messages.values())
    parsed = {str(model.model_fields["type"].annotation.__args__[0]) for model in CLIENT_FRAMES}  # type: ignore[union-attr]
    assert {"auth", "join", "message", "direct", "sync", "share"} <= parsed


def test_the_frames_the_server_builds_match_their_schemas() -> None:
    message = {"id": 7, "seq": 42, "room": "lobby", "from": "bob", "text": "hi", "ts": 1.5, "client_id": None}
    direct = {"id": 8, "seq": 3, "from": "bob", "to": "alice", "text": "psst", "ts": 2.5, "client_id": "c-1"}
    built = {
        "WelcomeFrame": protocol.welcome_frame("alice", "member", "s1", "host:1", 50),
        "ErrorFrame": protocol.error_frame("invalid_frame", "room: bad", client_id="c-2"),
        "MessageFrame": protocol.message_frame(message),
        "AckFrame": protocol.ack_frame({**message, "client_id": "c-3"}),
        "DirectsFrame": protocol.directs_frame([protocol.direct_frame(direct)], True, 3),
        "PresenceFrame": protocol.presence_frame(PresenceChange("lobby", ("bob",), (), 2)),
        "JoinedFrame": protocol.joined_frame("lobby", ["alice"], 2, [protocol.message_frame(message)], 42, True),
        "MembersFrame": protocol.members_frame("lobby", ["alice", "bob"], 2),
        "DirectFrame": protocol.direct_frame(direct),
        "DirectSentFrame": protocol.direct_sent_frame(direct),
        "RoomsFrame": protocol.rooms_frame({"lobby": 2}),
        "PongFrame": protocol.pong_frame(),
    }
    for name, frame in built.items():
        validator_for(name).validate(json.loads(json.dumps(frame)))
    with pytest.raises(jsonschema.ValidationError):
        validator_for("MessageFrame").validate({**built["MessageFrame"], "seq": "not a number"})


def test_client_frame_schemas_agree_with_the_parser() -> None:
    good = {"type": "join", "room": "lobby", "since": 41}
    validator_for("Join").validate(good)
    assert protocol.parse_client_frame(good) == protocol.Join(type="join", room="lobby", since=41)
    bad = {"type": "join", "room": "no spaces allowed"}
    with pytest.raises(jsonschema.ValidationError):
        validator_for("Join").validate(bad)
    with pytest.raises(protocol.InvalidFrame):
        protocol.parse_client_frame(bad)


def test_the_readme_tables_are_generated_from_the_models() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_tables() in readme, "run: python -m app.chat.asyncapi, and paste its tables into README.md"


async def test_the_document_is_served() -> None:
    from app.main import create_app
    from app.settings import Settings

    # explicit settings: get_settings() would load the project's .env into this process's environment
    transport = httpx.ASGITransport(app=create_app(Settings(secret_key="asyncapi-test-" + "x" * 32)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/asyncapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(document()))
