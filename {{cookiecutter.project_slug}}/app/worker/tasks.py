"""Jobs that publish through the channel layer: announcements, broadcasts, chunked notifications, room stats.

Every send is marked (dedup.py) under the job's id, so a retry after a broker blip, or a
redelivery of an ``acks_late`` task whose worker died, sends only what was not sent yet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from celery import Task, group
from kombu.exceptions import OperationalError

from ..channels import BrokerUnavailable
from ..chat.protocol import room_group, user_group
from ..settings import get_settings
from .celery_app import celery
from .dedup import Markers
from .layer_bridge import get_bridge
from .settings import get_job_settings

logger = logging.getLogger("app.worker")
_markers: Markers | None = None


def markers() -> Markers:
    global _markers
    if _markers is None:  # in the app's database, whatever the broker (dedup.py)
        _markers = Markers(get_settings().database_url.get_secret_value(), get_job_settings().dedup_ttl_seconds)
    return _markers


def transient_errors() -> tuple[type[BaseException], ...]:
    """The layer's broker or the marker store is briefly away: worth a retry."""
    errors: list[type[BaseException]] = [BrokerUnavailable, ConnectionError, TimeoutError, OperationalError]
    with contextlib.suppress(ImportError):
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        errors += [RedisConnectionError, RedisTimeoutError]
    with contextlib.suppress(ImportError):
        from sqlalchemy.exc import OperationalError as SqlOperationalError

        errors.append(SqlOperationalError)
    return tuple(errors)


class JobTask(Task):  # type: ignore[misc]
    """Retries with exponential backoff while the broker is down; logs the job when it gives up."""

    autoretry_for = transient_errors()
    retry_backoff = get_job_settings().retry_backoff_seconds
    retry_backoff_max = get_job_settings().retry_backoff_max_seconds
    retry_jitter = True
    max_retries = get_job_settings().max_retries
    acks_late = True

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        logger.warning("job %s[%s] retry %d: %s: %s", self.name, task_id, self.request.retries + 1,
                       type(exc).__name__, exc)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """The dead-letter record: the job, its arguments (abridged) and why it failed for good."""
        logger.error("job failed for good: %s[%s] args=%.500s kwargs=%.500s retries=%d: %s: %s",
                     self.name, task_id, json.dumps(args, default=str), json.dumps(kwargs, default=str),
                     self.request.retries, type(exc).__name__, exc,
                     extra={"dead_letter": True, "task": self.name, "task_id": task_id})


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def send_once(job_id: str, sends: Sequence[tuple[str, str, dict[str, Any]]]) -> int:
    """Group-send each ``(marker, group, message)`` not yet marked for ``job_id``; the number sent now."""
    store, bridge = markers(), get_bridge()
    rate = get_job_settings().send_rate
    todo = set(store.unsent(f"{job_id}:{marker}" for marker, _, _ in sends))
    sent = 0
    try:
        for marker, group_name, message in sends:
            key = f"{job_id}:{marker}"
            if key not in todo:
                continue
            bridge.group_send(group_name, message)
            store.mark(key)
            sent += 1
            if rate:
                time.sleep(1 / rate)
    except BaseException as exc:
        logger.warning("job %s: %d of %d sent before %s", job_id, sent, len(todo), type(exc).__name__)
        raise
    return sent


def announcement(job_id: str, room: str, text: str, sender: str = "system") -> dict[str, Any]:
    return {"type": "chat.announcement", "id": job_id, "room": room, "from": sender, "text": text, "ts": time.time()}


def fetch_rooms() -> list[dict[str, Any]]:
    """``GET /api/rooms`` of the web service: ``[{"name": ..., "members": ...}]``."""
    url = get_job_settings().service_url.rstrip("/") + "/api/rooms"
    token = get_settings().service_token.get_secret_value()  # APP_SERVICE_TOKEN, shared with the web service
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        rooms: list[dict[str, Any]] = json.loads(response.read())
    return rooms


@celery.task(base=JobTask, bind=True, name="app.worker.tasks.announce")
def announce(self: Task, room: str, text: str, announcement_id: str | None = None,
             sender: str = "system") -> dict[str, Any]:
    """Post an announcement to one room; its id is the task id unless given."""
    job_id = announcement_id or self.request.id
    sent = send_once(job_id, [(f"room:{room}", room_group(room), announcement(job_id, room, text, sender))])
    return {"id": job_id, "room": room, "sent": sent}


@celery.task(base=JobTask, bind=True, name="app.worker.tasks.announce_rooms")
def announce_rooms(self: Task, job_id: str, rooms: list[str], text: str, sender: str = "system") -> dict[str, Any]:
    """One chunk of a broadcast."""
    sent = send_once(job_id, [(f"room:{room}", room_group(room), announcement(job_id, room, text, sender))
                              for room in rooms])
    return {"rooms": len(rooms), "sent": sent}


@celery.task(base=JobTask, bind=True, name="app.worker.tasks.broadcast")
def broadcast(self: Task, text: str, rooms: list[str] | None = None, sender: str = "system") -> dict[str, Any]:
    """Announce to ``rooms``, or to every room the service reports; fans out in chunks."""
    job_id = self.request.id
    names = sorted(set(rooms)) if rooms is not None else [room["name"] for room in fetch_rooms()]
    size = get_job_settings().broadcast_chunk_size
    parts = [announce_rooms.si(job_id, part, text, sender).set(task_id=f"{job_id}-{index}")
             for index, part in enumerate(chunks(names, size))]
    if parts:
        group(parts).apply_async()
    return {"id": job_id, "rooms": len(names), "chunks": len(parts)}


@celery.task(base=JobTask, bind=True, name="app.worker.tasks.notify_chunk")
def notify_chunk(self: Task, job_id: str, users: list[str], text: str, sender: str) -> dict[str, Any]:
    """One chunk of a notification: a ``chat.direct`` to each user's group."""
    now = time.time()
    sent = send_once(job_id, [(f"user:{user}", user_group(user),
                               {"type": "chat.direct", "id": job_id, "from": sender, "to": user, "text": text,
                                "ts": now}) for user in users])
    return {"users": len(users), "sent": sent}


@celery.task(base=JobTask, bind=True, name="app.worker.tasks.notify_users")
def notify_users(self: Task, users: list[str], text: str, sender: str = "system") -> dict[str, Any]:
    """Split a notification into subtasks of ``APP_JOBS_NOTIFY_CHUNK_SIZE`` users; sends nothing itself.

    The subtask ids derive from this task's id, so a redelivered split enqueues the same ids and
    their markers keep each user to one message.
    """
    job_id = self.request.id
    unique = list(dict.fromkeys(users))
    size = get_job_settings().notify_chunk_size
    parts = [notify_chunk.si(job_id, part, text, sender).set(task_id=f"{job_id}-{index}")
             for index, part in enumerate(chunks(unique, size))]
    if parts:
        group(parts).apply_async()
    return {"id": job_id, "users": len(unique), "chunks": len(parts)}


@celery.task(base=JobTask, bind=True, name="app.worker.tasks.post_room_stats")
def post_room_stats(self: Task) -> dict[str, Any]:
    """Beat job: post each occupied room its statistics (members online, rooms open)."""
    job_id = self.request.id
    try:
        rooms = fetch_rooms()
    except OSError as exc:
        raise ConnectionError(f"web service unreachable: {exc}") from exc
    sends = [(f"room:{room['name']}", room_group(room["name"]),
              {**announcement(job_id, room["name"], f"{room['members']} online here, {len(rooms)} rooms open"),
               "stats": {"members": room["members"], "rooms": len(rooms)}})
             for room in rooms]
    return {"rooms": len(rooms), "sent": send_once(job_id, sends)}


__all__ = ["announce", "broadcast", "notify_chunk", "notify_users", "post_room_stats"]
