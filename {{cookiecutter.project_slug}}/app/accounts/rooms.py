"""Who may enter, read and post in a room: public rooms are open to every signed-in user, private ones
to their owner and invitees; posting over HTTP needs membership like the socket (joined, or invited)."""

from __future__ import annotations

from ..chat.presence import Presence
from .store import AccountStore


class Forbidden(PermissionError):
    """``str()`` is the detail the client gets (HTTP 403, or an error frame with code ``forbidden``)."""


class RoomAccess:
    def __init__(self, store: AccountStore, presence: Presence) -> None:
        self.store = store
        self.presence = presence

    async def check_enter(self, room: str, user: str) -> None:
        """Join, who, members and history."""
        if not await self.store.may_enter(room, user):
            raise Forbidden(f"room {room!r} is private: ask its owner for an invite")

    async def check_post(self, room: str, user: str) -> None:
        """An HTTP post: the sender is a member of the private room, or is in the public room on a socket."""
        if await self.store.private_room(room) is not None:
            await self.check_enter(room, user)
        elif user not in self.presence.members(room):
            raise Forbidden(f"join room {room!r} on a socket first")

    async def visible(self, rooms: dict[str, int], user: str) -> dict[str, int]:
        """``rooms`` without the private ones ``user`` is not a member of."""
        hidden = await self.store.private_rooms_hidden_from(user, list(rooms))
        return {name: count for name, count in rooms.items() if name not in hidden}

    async def create_private(self, room: str, owner: str) -> None:
        if self.presence.members(room):
            raise Forbidden(f"room {room!r} is in use as a public room")
        await self.store.create_private_room(room, owner)

    async def invite(self, room: str, owner: str, username: str) -> str:
        """The invitee's stored name; only the owner invites."""
        found = await self.store.private_room(room)
        if found is None or found.owner != owner:
            raise Forbidden(f"only the owner of private room {room!r} invites")
        account = await self.store.user(username)
        if account is None:
            raise LookupError(f"no user {username!r}")
        await self.store.invite(room, account.username)
        return account.username
