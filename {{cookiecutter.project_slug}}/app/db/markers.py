"""``job_markers``: a key a job claims once, so a retried Celery task does its side effect once."""

from __future__ import annotations

from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class JobMarker(Base):
    __tablename__ = "job_markers"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires: Mapped[float] = mapped_column(Float, index=True)
