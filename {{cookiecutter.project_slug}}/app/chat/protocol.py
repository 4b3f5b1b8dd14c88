"""The WebSocket protocol: client frames are JSON objects validated by ``type``.

Server frames are plain dicts built by the ``*_frame`` helpers at the end, typed by the TypedDicts
of frames.py, so each frame's shape is written down once; the AsyncAPI document and the README's
tables are generated from these models and those (asyncapi.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from . import frames

if TYPE_CHECKING:
    from .presence import PresenceChange

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,32}$"
RoomName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
UserName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4000)]
#: The sender's key for a send: a resend with the same one stores nothing new and gets the same ack.
ClientId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Seq = Annotated[int, Field(ge=0)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Auth(_Frame):
    """The first frame, with a token from ``POST /api/login``: answered by ``welcome`` (else close 1008)."""

    type: Literal["auth"]
    token: str


class Join(_Frame):
    """Join a room (names: 1 to 32 of ``A-Z a-z 0-9 _ . -``); with ``since``, recover every later message."""

    type: Literal["join"]
    room: RoomName
    #: The last seq the client has of this room: ``joined`` recovers every later one.
    since: Seq | None = None


class Leave(_Frame):
    """Leave a room."""

    type: Literal["leave"]
    room: RoomName


class Say(_Frame):
    """Say something (up to 4,000 characters); with ``client_id``, acknowledged and idempotent."""

    type: Literal["message"]
    room: RoomName
    text: Text
    client_id: ClientId | None = None


class Typing(_Frame):
    """A typing indicator (ephemeral)."""

    type: Literal["typing"]
    room: RoomName
    typing: bool = True


class Direct(_Frame):
    """A direct message to every socket of ``to`` (kept while they are offline)."""

    type: Literal["direct"]
    to: UserName
    text: Text
    client_id: ClientId | None = None


class Sync(_Frame):
    """Asks for the direct messages after ``dm_since`` (the last direct seq the client has)."""

    type: Literal["sync"]
    dm_since: Seq = 0


class ListRooms(_Frame):
    """The room list with member counts."""

    type: Literal["rooms"]


class Who(_Frame):
    """The members of a room."""

    type: Literal["who"]
    room: RoomName


class Ping(_Frame):
    """Keep-alive: answered by ``pong``."""

    type: Literal["ping"]


class Share(_Frame):
    """Announces the binary frame that follows: it goes to ``room``."""

    type: Literal["share"]
    room: RoomName
    mime: Annotated[str, StringConstraints(pattern=r"^image/(png|jpeg|gif|webp)$")]


ClientFrame = Annotated[
    Join | Leave | Say | Typing | Direct | Sync | ListRooms | Who | Ping | Share, Field(discriminator="type")
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


def welcome_frame(user: str, role: str, session: str | None, worker: str, history_size: int) -> frames.WelcomeFrame:
    return {"type": "welcome", "user": user, "role": role, "session": session, "worker": worker,
            "history_size": history_size}


def error_frame(code: str, detail: str, client_id: str | None = None) -> frames.ErrorFrame:
    """``client_id`` names the refused send, so the client can mark it failed."""
    frame: frames.ErrorFrame = {"type": "error", "code": code, "detail": detail}
    if client_id is not None:
        frame["client_id"] = client_id
    return frame


def message_frame(message: dict[str, Any]) -> frames.MessageFrame:
    return {"type": "message", "id": message["id"], "seq": message["seq"], "room": message["room"],
            "from": message["from"], "text": message["text"], "ts": message["ts"], "client_id": message["client_id"]}


def ack_frame(message: dict[str, Any]) -> frames.AckFrame:
    """A send is stored: ``room`` for a room message, ``to`` for a direct one (``seq`` is the recipient's)."""
    frame: frames.AckFrame = {"type": "ack", "client_id": message["client_id"], "id": message["id"],
                              "seq": message["seq"]}
    if "room" in message:
        frame["room"] = message["room"]
    else:
        frame["to"] = message["to"]
    return frame


def directs_frame(messages: list[frames.DirectFrame], recovered: bool, seq: int) -> frames.DirectsFrame:
    """The answer to ``sync``: direct messages after ``dm_since`` (``seq``: the user's latest)."""
    return {"type": "directs", "messages": messages, "recovered": recovered, "seq": seq}


def presence_frame(change: PresenceChange) -> frames.PresenceFrame:
    """Who came and went, and the room's count: never its member list, so the frame does not grow with the room."""
    return {"type": "presence", "room": change.room, "joined": change.joined, "left": change.left,
            "count": change.count}


def joined_frame(room: str, members: list[str], count: int, history: list[frames.MessageFrame], seq: int,
                 recovered: bool | None = None) -> frames.JoinedFrame:
    """``members``: the first of the room's ``count`` by name (``Presence.member_view``); ``seq``: where the
    room stands (live messages follow it); ``recovered`` answers a join with ``since``."""
    frame: frames.JoinedFrame = {"type": "joined", "room": room, "members": members, "count": count,
                                 "truncated": len(members) < count, "history": history, "seq": seq}
    if recovered is not None:
        frame["recovered"] = recovered
    return frame


def left_frame(room: str) -> frames.LeftFrame:
    return {"type": "left", "room": room}


def members_frame(room: str, members: list[str], count: int) -> frames.MembersFrame:
    """``members``: the first of the room's ``count`` by name, as in ``joined``."""
    return {"type": "members", "room": room, "members": members, "count": count, "truncated": len(members) < count}


def rooms_frame(rooms: dict[str, int]) -> frames.RoomsFrame:
    return {"type": "rooms", "rooms": [{"name": name, "members": count} for name, count in rooms.items()]}


def pong_frame() -> frames.PongFrame:
    return {"type": "pong"}


def typing_frame(message: dict[str, Any]) -> frames.TypingFrame:
    return {"type": "typing", "room": message["room"], "from": message["from"], "typing": message["typing"]}


def direct_sent_frame(message: dict[str, Any]) -> frames.DirectSentFrame:
    return {"type": "direct_sent", "id": message["id"], "seq": message["seq"], "to": message["to"]}


def direct_frame(message: dict[str, Any]) -> frames.DirectFrame:
    return {"type": "direct", "id": message["id"], "seq": message.get("seq"), "from": message["from"],
            "to": message["to"], "text": message["text"], "ts": message["ts"], "client_id": message.get("client_id")}


def share_frame(message: dict[str, Any]) -> frames.ShareFrame:
    """Announces the binary frame that follows it."""
    return {"type": "share", "room": message["room"], "from": message["from"], "mime": message["mime"],
            "size": len(message["data"])}


def announcement_frame(message: dict[str, Any]) -> frames.AnnouncementFrame:
    return {"type": "announcement", "id": message.get("id"), "room": message.get("room"),
            "from": message.get("from", "system"), "text": message["text"], "ts": message.get("ts")}
