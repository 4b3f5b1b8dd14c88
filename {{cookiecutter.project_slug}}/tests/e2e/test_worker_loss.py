"""A worker dies under an open page: the page says so, reconnects to another worker, rejoins, loses nothing after."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from ..live_server import LiveServer
from .conftest import Browse
from .test_chat_page import spread

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize(
    ("how", "close_code"), [(signal.SIGTERM, 1001), (signal.SIGKILL, 1006)], ids=["sigterm", "sigkill"]
)
def test_page_reconnects_to_a_surviving_worker(
    fresh_server: LiveServer, browse: Browse, uniq: Callable[[str], str], how: signal.Signals, close_code: int
) -> None:
    server = fresh_server
    alice, bob = browse(server, "alice"), browse(server, "bob")
    alice.sign_in(uniq("alice"))
    bob.sign_in(uniq("bob"))
    spread(alice, bob)
    room = uniq("ops")
    alice.join(room)
    bob.join(room)
    alice.expect_members(uniq("alice"), uniq("bob"))
    alice.say("before the crash")
    bob.expect_item("message", uniq("alice"), "before the crash")

    victim = alice.worker_pid
    old_worker = alice.worker
    assert victim in server.worker_pids() and victim != bob.worker_pid
    mark = len(alice.frames)
    os.kill(victim, how)

    # the page shows that it lost the connection and is reconnecting, then is back on another worker
    alice.wait_until(lambda: "reconnecting" in alice.states(), "the reconnecting state")
    alice.wait_until(lambda: any(f"code {close_code}" in text for text in alice.banners()), "the banner")
    assert any("reconnecting in" in text for text in alice.banners()), alice.banners()
    alice.wait_frame("welcome", after=mark, timeout=20)
    alice.wait_online()
    expect(alice.banner).to_be_hidden()
    assert alice.worker != old_worker
    states = alice.states()
    assert states[-1] == "online" and states.index("reconnecting") < len(states) - 1, states
    joined = alice.wait_frame("joined", after=mark, room=room)  # the page rejoined its room by itself
    assert uniq("alice") in joined["members"]
    expect(alice.page.locator("#room-title")).to_have_text(f"# {room}")
    alice.expect_item("message", uniq("alice"), "before the crash")  # what the page showed is kept
    assert "reconnecting" not in bob.states(), "the other worker's page must not notice"

    # gunicorn replaces the dead worker
    bob.wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 3, "a new worker")
    assert alice.worker_pid in server.worker_pids()

    # nothing sent after the reconnect is lost, either way
    for chat in (alice, bob):
        chat.expect_members(uniq("alice"), uniq("bob"))
    sent_by_bob = [f"after {i} from bob" for i in range(8)]
    sent_by_alice = [f"after {i} from alice" for i in range(4)]
    for text in sent_by_bob:
        bob.say(text)
    for text in sent_by_alice:
        alice.say(text)
    for text in sent_by_bob:
        alice.expect_item("message", uniq("bob"), text)
    for text in sent_by_alice:
        bob.expect_item("message", uniq("alice"), text)
    for chat in (alice, bob):
        shown = [item["text"] for item in chat.items() if item["kind"] == "message"]
        assert [t for t in shown if t in sent_by_bob] == sent_by_bob, chat.label
        assert [t for t in shown if t in sent_by_alice] == sent_by_alice, chat.label
