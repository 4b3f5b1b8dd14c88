"""The server frames' shapes, one TypedDict each: the ``*_frame`` helpers in protocol.py build them
(plain dicts on the hot path, checked by mypy), and the AsyncAPI document and the README's tables are
generated from them (app/chat/asyncapi.py). Each docstring says when the server sends the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import (
    Any,
    Literal,
    NotRequired,  # pydantic reads only typing_extensions' on 3.11
)

from typing_extensions import TypedDict


class WelcomeFrame(TypedDict):
    """After ``auth``: who the socket is signed in as."""

    type: Literal["welcome"]
    user: str
    role: str
    session: str | None
    worker: str
    history_size: int


class ErrorFrame(TypedDict):
    """A refused frame (the socket stays open); ``client_id`` names a refused send."""

    type: Literal["error"]
    code: str
    detail: str
    client_id: NotRequired[str]


# "from" is a keyword, so these frames use the functional form
MessageFrame = TypedDict(
    "MessageFrame",
    {"type": Literal["message"], "id": int, "seq": int, "room": str, "from": str, "text": str, "ts": float,
     "client_id": str | None},
)
MessageFrame.__doc__ = "A room message, stored first, in seq order (also the items of ``joined.history``)."


class AckFrame(TypedDict):
    """A send with ``client_id`` is stored: ``room`` for a room message, ``to`` (and the recipient's seq)
    for a direct one."""

    type: Literal["ack"]
    client_id: str
    id: int
    seq: int
    room: NotRequired[str]
    to: NotRequired[str]


class DirectsFrame(TypedDict):
    """After ``sync``: the direct messages after ``dm_since`` (``seq``: the user's latest)."""

    type: Literal["directs"]
    messages: list[DirectFrame]
    recovered: bool
    seq: int


class PresenceFrame(TypedDict):
    """Someone came to or left a room (changes within 100 ms, longer in a crowded room, arrive as one, naming
    at most 100 users each way), with the room's member ``count``; a client applies ``joined`` and ``left``
    to the members it knows."""

    type: Literal["presence"]
    room: str
    joined: Sequence[str]
    left: Sequence[str]
    count: int


class JoinedFrame(TypedDict):
    """After ``join``: the members (the first ``APP_MEMBER_LIST_LIMIT`` by name of ``count``; ``truncated``
    when there are more), the history (recovered after ``since``) and the room's seq."""

    type: Literal["joined"]
    room: str
    members: list[str]
    count: int
    truncated: bool
    history: list[MessageFrame]
    seq: int
    recovered: NotRequired[bool]


class LeftFrame(TypedDict):
    """After ``leave``."""

    type: Literal["left"]
    room: str


class MembersFrame(TypedDict):
    """After ``who``: the members as in ``joined``."""

    type: Literal["members"]
    room: str
    members: list[str]
    count: int
    truncated: bool


class RoomListing(TypedDict):
    name: str
    members: int


class RoomsFrame(TypedDict):
    """After ``rooms``: every room with its member count."""

    type: Literal["rooms"]
    rooms: list[RoomListing]


class PongFrame(TypedDict):
    """After ``ping``."""

    type: Literal["pong"]


TypingFrame = TypedDict(
    "TypingFrame", {"type": Literal["typing"], "room": str, "from": str, "typing": bool}
)
TypingFrame.__doc__ = "Someone in a room is typing (or stopped)."

DirectFrame = TypedDict(
    "DirectFrame",
    {"type": Literal["direct"], "id": int, "seq": int | None, "from": str, "to": str, "text": str, "ts": float,
     "client_id": str | None},
)
DirectFrame.__doc__ = "A direct message to this user (kept while offline; recovered with ``sync``)."


class DirectSentFrame(TypedDict):
    """A direct message without ``client_id`` is stored and on its way."""

    type: Literal["direct_sent"]
    id: int
    seq: int
    to: str


ShareFrame = TypedDict(
    "ShareFrame", {"type": Literal["share"], "room": str, "from": str, "mime": str, "size": int}
)
ShareFrame.__doc__ = "An image share: one binary frame of ``size`` bytes follows."

AnnouncementFrame = TypedDict(
    "AnnouncementFrame",
    {"type": Literal["announcement"], "id": Any, "room": str | None, "from": str, "text": str, "ts": float | None},
)
AnnouncementFrame.__doc__ = "An admin's announcement, sent through a job."

SERVER_FRAMES: tuple[Any, ...] = (
    WelcomeFrame, JoinedFrame, LeftFrame, MessageFrame, AckFrame, PresenceFrame, TypingFrame, DirectFrame,
    DirectSentFrame, DirectsFrame, ShareFrame, AnnouncementFrame, RoomsFrame, MembersFrame, PongFrame, ErrorFrame,
)
