"""The WebSocket protocol: client frames are JSON objects validated by ``type``.

Server frames are plain dicts built by the ``*_frame`` helpers at the end, so each
frame's shape is written down once (the README documents both directions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

if TYPE_CHECKING:
    from .presence import PresenceChange

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,32}$"
RoomName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
UserName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4000)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Join(_Frame):
    type: Literal["join"]
    room: RoomName


class Leave(_Frame):
    type: Literal["leave"]
    room: RoomName


class Say(_Frame):
    type: Literal["message"]
    room: RoomName
    text: Text


class Typing(_Frame):
    type: Literal["typing"]
    room: RoomName
    typing: bool = True


class Direct(_Frame):
    type: Literal["direct"]
    to: UserName
    text: Text


class ListRooms(_Frame):
    type: Literal["rooms"]


class Who(_Frame):
    type: Literal["who"]
    room: RoomName


class Ping(_Frame):
    type: Literal["ping"]


class Share(_Frame):
    """Announces the binary frame that follows: it goes to ``room``."""

    type: Literal["share"]
    room: RoomName
    mime: Annotated[str, StringConstraints(pattern=r"^image/(png|jpeg|gif|webp)$")]


ClientFrame = Annotated[
    Join | Leave | Say | Typing | Direct | ListRooms | Who | Ping | Share, Field(discriminator="type")
]
_client_frame: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


class InvalidFrame(ValueError):
    """A client frame that does not match the protocol; ``str()`` names the problem."""


def parse_client_frame(content: Any) -> ClientFrame:
    try:
        return _client_frame.validate_python(content)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "frame"
        raise InvalidFrame(f"{where}: {error['msg']}") from None


def room_group(room: str) -> str:
    """The layer group every socket in ``room`` joins."""
    return f"room.{room}"


def user_group(user: str) -> str:
    """The layer group every socket of ``user`` joins (direct messages)."""
    return f"user.{user}"


def session_group(session: str) -> str:
    """The layer group every socket of one login session joins (logout closes them all)."""
    return f"session.{session}"


def welcome_frame(user: str, role: str, session: str | None, worker: str, history_size: int) -> dict[str, Any]:
    return {"type": "welcome", "user": user, "role": role, "session": session, "worker": worker,
            "history_size": history_size}


def error_frame(code: str, detail: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "detail": detail}


def message_frame(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "id": message["id"], "room": message["room"], "from": message["from"],
            "text": message["text"], "ts": message["ts"]}


def presence_frame(change: PresenceChange) -> dict[str, Any]:
    return {"type": "presence", "room": change.room, "joined": change.joined, "left": change.left,
            "members": change.members}


def joined_frame(room: str, members: list[str], history: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "joined", "room": room, "members": members, "history": history}


def left_frame(room: str) -> dict[str, Any]:
    return {"type": "left", "room": room}


def members_frame(room: str, members: list[str]) -> dict[str, Any]:
    return {"type": "members", "room": room, "members": members}


def rooms_frame(rooms: dict[str, int]) -> dict[str, Any]:
    return {"type": "rooms", "rooms": [{"name": name, "members": count} for name, count in rooms.items()]}


def pong_frame() -> dict[str, Any]:
    return {"type": "pong"}


def typing_frame(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "typing", "room": message["room"], "from": message["from"], "typing": message["typing"]}


def direct_sent_frame(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "direct_sent", "id": message["id"], "to": message["to"]}


def direct_frame(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "direct", "id": message["id"], "from": message["from"], "to": message["to"],
            "text": message["text"], "ts": message["ts"]}


def share_frame(message: dict[str, Any]) -> dict[str, Any]:
    """Announces the binary frame that follows it."""
    return {"type": "share", "room": message["room"], "from": message["from"], "mime": message["mime"],
            "size": len(message["data"])}


def announcement_frame(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "announcement", "id": message.get("id"), "room": message.get("room"),
            "from": message.get("from", "system"), "text": message["text"], "ts": message.get("ts")}
