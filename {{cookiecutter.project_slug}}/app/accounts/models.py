"""Users, sessions, private rooms and login failures on the shared declarative Base (app/db/base.py)."""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db.base import Base


class User(Base):
    __tablename__ = "users"

    #: the name as typed at signup; ``name_key`` (lower case) makes names unique case-insensitively
    username: Mapped[str] = mapped_column(String(32), primary_key=True)
    name_key: Mapped[str] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)  # None: OIDC-only user
    role: Mapped[str] = mapped_column(String(16), default="member")
    created: Mapped[float] = mapped_column(Float)


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username", ondelete="CASCADE"), index=True)
    created: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float, index=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Room(Base):
    """A room someone created private; public rooms need no row (they exist while someone is in them)."""

    __tablename__ = "rooms"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(ForeignKey("users.username", ondelete="CASCADE"))
    private: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[float] = mapped_column(Float)


class RoomMember(Base):
    """Who may enter a private room (the owner and everyone the owner invited)."""

    __tablename__ = "room_members"

    room: Mapped[str] = mapped_column(ForeignKey("rooms.name", ondelete="CASCADE"), primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username", ondelete="CASCADE"), primary_key=True)


class LoginFailure(Base):
    """Failed logins of one user name (``user:<name>``) or client address (``addr:<ip>``) in a window."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    window_start: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
