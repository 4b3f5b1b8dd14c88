"""The tables of stored messages.

A *stream* is a room (``kind="room"``, ``stream`` the room name) or one user's direct messages
(``kind="direct"``, ``stream`` the recipient). ``stream_seq`` holds each stream's last ``seq``;
a message takes the next one in the transaction that stores it, so the seqs of a stream are
contiguous and strictly increasing in commit order.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..db.base import Base

# SQLite's autoincrementing key must be declared INTEGER; PostgreSQL gets a bigint identity
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("kind", "stream", "seq"),
        UniqueConstraint("sender", "client_id"),
        Index(None, "ts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8))
    stream: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    sender: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    ts: Mapped[float] = mapped_column(Float)
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class StreamSeq(Base):
    __tablename__ = "stream_seq"

    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
