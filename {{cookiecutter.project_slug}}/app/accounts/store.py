"""Data access for accounts: users, sessions, private rooms and their members."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from .models import Room, RoomMember, Session, User

# The reads of every handshake and join, built once (building a statement costs more than running it).
_SESSION_ACCOUNT = (select(User.username, User.role, User.password_hash)
                    .join(Session, Session.username == User.username)
                    .where(Session.id == bindparam("sid"), User.username == bindparam("username"),
                           Session.revoked.is_(False), Session.expires > bindparam("now")))
_MAY_ENTER = select(Room.private, select(RoomMember.username).where(
    RoomMember.room == Room.name, RoomMember.username == bindparam("username")).exists()).where(
    Room.name == bindparam("room"))


class NameTaken(ValueError):
    """The user name, or the room name, exists already (compared case-insensitively for users)."""


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    password_hash: str | None


@dataclass(frozen=True)
class PrivateRoom:
    name: str
    owner: str


class AccountStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._session = async_sessionmaker(engine, expire_on_commit=False)

    # ------------------------------------------------------------------ users

    async def create_user(self, username: str, password_hash: str | None, role: str = "member") -> Account:
        async with self._session() as db:
            db.add(User(username=username, name_key=username.lower(), password_hash=password_hash, role=role,
                        created=time.time()))
            try:
                await db.commit()
            except IntegrityError:
                raise NameTaken(username) from None
        return Account(username, role, password_hash)

    async def user(self, username: str) -> Account | None:
        """The account named ``username`` in any letter case."""
        async with self._session() as db:
            row = (await db.execute(select(User).where(User.name_key == username.lower()))).scalar_one_or_none()
        return Account(row.username, row.role, row.password_hash) if row else None

    async def update_user(self, username: str, *, password_hash: str | None = None, role: str | None = None) -> None:
        values: dict[str, str] = {}
        if password_hash is not None:
            values["password_hash"] = password_hash
        if role is not None:
            values["role"] = role
        if values:
            async with self._session() as db:
                await db.execute(update(User).where(User.username == username).values(**values))
                await db.commit()

    # ------------------------------------------------------------------ sessions

    async def create_session(self, username: str, ttl: float) -> str:
        session_id = uuid.uuid4().hex
        now = time.time()
        async with self._session() as db:
            db.add(Session(id=session_id, username=username, created=now, expires=now + ttl, revoked=False))
            await db.execute(delete(Session).where(Session.username == username, Session.expires < now))
            await db.commit()
        return session_id

    async def session_account(self, session_id: str, username: str) -> Account | None:
        """The account of a live session of ``username`` (exact name), in one query: every socket's
        handshake asks, thousands a second in a reconnect storm."""
        async with self.engine.connect() as connection:
            row = (await connection.execute(_SESSION_ACCOUNT, {"sid": session_id, "username": username,
                                                               "now": time.time()})).first()
        return Account(row.username, row.role, row.password_hash) if row else None

    async def revoke_session(self, session_id: str) -> None:
        async with self._session() as db:
            await db.execute(update(Session).where(Session.id == session_id).values(revoked=True))
            await db.commit()

    # ------------------------------------------------------------------ private rooms

    async def create_private_room(self, name: str, owner: str) -> PrivateRoom:
        async with self._session() as db:
            db.add(Room(name=name, owner=owner, private=True, created=time.time()))
            db.add(RoomMember(room=name, username=owner))
            try:
                await db.commit()
            except IntegrityError:
                raise NameTaken(name) from None
        return PrivateRoom(name, owner)

    async def private_room(self, name: str) -> PrivateRoom | None:
        async with self._session() as db:
            row = await db.get(Room, name)
        return PrivateRoom(row.name, row.owner) if row is not None and row.private else None

    async def invite(self, room: str, username: str) -> None:
        async with self._session() as db:
            if await db.get(RoomMember, (room, username)) is None:
                db.add(RoomMember(room=room, username=username))
                await db.commit()

    async def may_enter(self, room: str, username: str) -> bool:
        """Public (no private room of that name), or ``username`` is a member: one query per join."""
        async with self.engine.connect() as connection:
            row = (await connection.execute(_MAY_ENTER, {"room": room, "username": username})).first()
        return row is None or not row[0] or bool(row[1])

    async def private_rooms_hidden_from(self, username: str, names: list[str]) -> set[str]:
        """The private rooms among ``names`` that ``username`` is not a member of."""
        if not names:
            return set()
        async with self._session() as db:
            private = set((await db.execute(select(Room.name).where(Room.name.in_(names), Room.private))).scalars())
            if not private:
                return set()
            mine = set((await db.execute(select(RoomMember.room).where(
                RoomMember.username == username, RoomMember.room.in_(private)))).scalars())
        return private - mine
