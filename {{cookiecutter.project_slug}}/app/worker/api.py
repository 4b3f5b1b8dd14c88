"""The jobs API, for admins: enqueue Celery jobs over HTTP and ask for their state (a job's result: its owner only).

``app/main.py`` includes this router when the ``app.worker`` package exists (``use_celery=yes``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from typing import Any

from celery.result import AsyncResult
from fastapi import APIRouter, HTTPException, status
from kombu.exceptions import OperationalError
from pydantic import BaseModel, Field

from ..accounts.api import Admin
from ..chat.protocol import RoomName, Text, UserName
from ..settings import get_settings
from .celery_app import celery
from .tasks import announce, broadcast, notify_users

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


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


def job_id_for(owner: str, nonce: str | None = None) -> str:
    """A job id that proves who enqueued it: a nonce and its HMAC with the owner's name (no table needed)."""
    nonce = nonce or uuid.uuid4().hex
    key = get_settings().secret_key.get_secret_value().encode()
    return f"{nonce}.{hmac.new(key, f'job:{owner}:{nonce}'.encode(), hashlib.sha256).hexdigest()[:24]}"


def owns(owner: str, job_id: str) -> bool:
    nonce, _, _ = job_id.partition(".")
    return hmac.compare_digest(job_id_for(owner, nonce), job_id)


async def _enqueue(owner: str, task: Any, *args: Any, **kwargs: Any) -> Job:
    try:
        result = await asyncio.to_thread(task.apply_async, args, kwargs, task_id=job_id_for(owner))
    except OperationalError as exc:  # the Celery broker is down (after kombu's publish retries)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"job queue unavailable: {exc}") from None
    return Job(id=result.id, state="PENDING")


@router.post("/announce", response_model=Job, status_code=202)
async def post_announce(body: Announce, admin: Admin) -> Job:
    """Announce ``text`` to one room, signed with the admin's name."""
    return await _enqueue(admin.user, announce, body.room, body.text, sender=admin.user)


@router.post("/broadcast", response_model=Job, status_code=202)
async def post_broadcast(body: Broadcast, admin: Admin) -> Job:
    """Announce ``text`` to the given rooms, or to every room."""
    return await _enqueue(admin.user, broadcast, body.text, body.rooms, sender=admin.user)


@router.post("/notify", response_model=Job, status_code=202)
async def post_notify(body: Notify, admin: Admin) -> Job:
    """A direct message from the caller to each user, sent in chunks by subtasks."""
    return await _enqueue(admin.user, notify_users, body.users, body.text, admin.user)


@router.get("/{job_id}", response_model=Job, responses={501: {"description": "the result backend is rpc://"}})
async def get_job(job_id: str, admin: Admin) -> Job:
    """PENDING (or unknown), STARTED, RETRY, SUCCESS with the result, or FAILURE with the error (owner only)."""
    if str(celery.conf.result_backend).startswith("rpc"):
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, "rpc:// results reach only the process that sent"
                            " the job: set CELERY_RESULT_BACKEND to redis://... or db+postgresql://...")
    if not owns(admin.user, job_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no job of yours has this id")

    def read() -> Job:
        result = AsyncResult(job_id, app=celery)
        state = result.state
        if state in ("FAILURE", "RETRY"):
            return Job(id=job_id, state=state, error=f"{type(result.result).__name__}: {result.result}")
        return Job(id=job_id, state=state, result=result.result if state == "SUCCESS" else None)

    return await asyncio.to_thread(read)
