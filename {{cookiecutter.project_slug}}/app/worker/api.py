"""The jobs API: enqueue Celery jobs over HTTP and ask for their state (same bearer token as the chat API).

``app/main.py`` includes this router when the ``app.worker`` package exists (``use_celery=yes``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from celery.result import AsyncResult
from fastapi import APIRouter, Depends, HTTPException, status
from kombu.exceptions import OperationalError
from pydantic import BaseModel, Field

from ..chat.api import current_user
from ..chat.protocol import RoomName, Text, UserName
from .celery_app import celery
from .tasks import announce, broadcast, notify_users

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
User = Annotated[str, Depends(current_user)]


class Announce(BaseModel):
    room: RoomName
    text: Text


class Broadcast(BaseModel):
    text: Text
    #: Omit to announce to every room the service reports (``GET /api/rooms``).
    rooms: list[RoomName] | None = Field(None, max_length=100_000)


class Notify(BaseModel):
    users: list[UserName] = Field(min_length=1, max_length=100_000)
    text: Text


class Job(BaseModel):
    id: str
    state: str
    result: Any = None
    error: str | None = None


async def _enqueue(task: Any, *args: Any, **kwargs: Any) -> Job:
    try:
        result = await asyncio.to_thread(task.apply_async, args, kwargs)
    except OperationalError as exc:  # the Celery broker is down (after kombu's publish retries)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"job queue unavailable: {exc}") from None
    return Job(id=result.id, state="PENDING")


@router.post("/announce", response_model=Job, status_code=202)
async def post_announce(body: Announce, user: User) -> Job:
    """Announce ``text`` to one room."""
    return await _enqueue(announce, body.room, body.text)


@router.post("/broadcast", response_model=Job, status_code=202)
async def post_broadcast(body: Broadcast, user: User) -> Job:
    """Announce ``text`` to the given rooms, or to every room."""
    return await _enqueue(broadcast, body.text, body.rooms)


@router.post("/notify", response_model=Job, status_code=202)
async def post_notify(body: Notify, user: User) -> Job:
    """A direct message from the caller to each user, sent in chunks by subtasks."""
    return await _enqueue(notify_users, body.users, body.text, user)


@router.get("/{job_id}", response_model=Job, responses={501: {"description": "the result backend is rpc://"}})
async def get_job(job_id: str, user: User) -> Job:
    """PENDING (or unknown), STARTED, RETRY, SUCCESS with the result, or FAILURE with the error."""
    if str(celery.conf.result_backend).startswith("rpc"):
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, "rpc:// results reach only the process that sent"
                            " the job: set CELERY_RESULT_BACKEND to redis://... or db+postgresql://...")

    def read() -> Job:
        result = AsyncResult(job_id, app=celery)
        state = result.state
        if state in ("FAILURE", "RETRY"):
            return Job(id=job_id, state=state, error=f"{type(result.result).__name__}: {result.result}")
        return Job(id=job_id, state=state, result=result.result if state == "SUCCESS" else None)

    return await asyncio.to_thread(read)
