"""A Celery job's announcement appears in every tab of the room, whichever worker serves the tab."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..brokers import URLS, distributed_backends, require_broker
from ..celery.conftest import Stack, run_stack, stack_env
from .conftest import Browse
from .test_chat_page import spread

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(params=distributed_backends())
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    backend: str = request.param
    require_broker(backend)
    extra: dict[str, str] = {}
    if backend in ("nats", "rabbitmq"):
        require_broker("redis")  # the nats stack's Celery broker; job state for rabbitmq's rpc:// results
    if backend == "rabbitmq":
        extra = {"CELERY_RESULT_BACKEND": URLS["redis"]}
    prefix = f"t{secrets.token_hex(5)}"
    with run_stack(backend, prefix, tmp_path, env=stack_env(backend, prefix, **extra)) as running:
        yield running


def test_announcement_reaches_every_tab(stack: Stack, browse: Browse, uniq: Callable[[str], str]) -> None:
    alice = browse(stack.server, "alice")
    alice_again = browse(stack.server, "alice-tab2", tab=alice)  # a second tab of the same user
    bob = browse(stack.server, "bob")
    for chat, name in ((alice, "alice"), (alice_again, "alice"), (bob, "bob")):
        chat.sign_in(uniq(name))
    spread(alice, bob)
    assert alice.worker != bob.worker
    room = uniq("news")
    for chat in (alice, alice_again, bob):
        chat.join(room)
    token = stack.server.login("ops")  # an admin (APP_ADMIN_USERNAMES in stack_env): the jobs API is theirs
    status, job = stack.call("POST", "/api/jobs/announce", token, {"room": room, "text": "deploy at 22:00"})
    assert status == 202, job
    for chat in (alice, alice_again, bob):
        frame = chat.wait_frame("announcement", timeout=30, id=job["id"])
        assert frame["text"] == "deploy at 22:00"
        chat.expect_item("announcement", "📣 announcement", "deploy at 22:00")
    assert stack.wait_job(token, job["id"])["state"] == "SUCCESS"
