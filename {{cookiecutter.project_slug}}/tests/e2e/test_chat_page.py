"""The chat page in real Chromium against real gunicorn workers: every user on a different worker."""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable

import jwt
import pytest
from playwright.sync_api import FilePayload, expect

from app.accounts.tokens import ALGORITHM, issue_token
from app.settings import Settings

from ..live_server import LiveServer
from .chat_page import ChatPage
from .conftest import Browse

pytestmark = pytest.mark.e2e

Uniq = Callable[[str], str]


def spread(*pages: ChatPage) -> None:
    """Reload each page until it is served by a worker none of the previous pages uses (while workers last)."""
    taken: set[str] = set()
    for chat in pages:
        if len(taken) < chat.server.workers:
            chat.move_off(taken)
        taken.add(chat.worker)


def png(width: int = 8, height: int = 6) -> bytes:
    """A small RGB gradient PNG, written by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def pixel(x: int, y: int) -> tuple[int, int, int]:
        return 255 * x // max(width - 1, 1), 255 * y // max(height - 1, 1), 200

    rows = b"".join(b"\0" + bytes(v for x in range(width) for v in pixel(x, y)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_room_messages_members_and_typing(server: LiveServer, browse: Browse, uniq: Uniq) -> None:
    alice, bob = browse(server, "alice"), browse(server, "bob")
    alice.sign_in(uniq("alice"))
    bob.sign_in(uniq("bob"))
    spread(alice, bob)
    if server.workers > 1:
        assert alice.worker != bob.worker
    expect(alice.status).to_have_text(f"online · worker {alice.worker}")

    room = uniq("lobby")
    alice.join(room)
    bob.join(room)
    for chat in (alice, bob):
        chat.expect_members(uniq("alice"), uniq("bob"))
    expect(alice.page.locator(f'#members li[data-user="{uniq("alice")}"]')).to_have_text(f"{uniq('alice')} (you)")
    expect(alice.page.locator(f'#rooms li[data-room="{room}"] .count')).to_have_text("2")
    expect(alice.messages.locator("li.system", has_text=f"{uniq('bob')} joined").first).to_be_visible()

    alice.say("hello from alice")
    bob.say("hello from bob")
    for chat in (alice, bob):
        chat.expect_item("message", uniq("alice"), "hello from alice")
        chat.expect_item("message", uniq("bob"), "hello from bob")

    bob.type_text("I am typ")
    expect(alice.page.locator("#typing")).to_have_text(f"{uniq('bob')} is typing…")
    expect(bob.page.locator("#typing")).to_have_text("")
    bob.page.press("#text", "Enter")
    expect(alice.page.locator("#typing")).to_have_text("")
    alice.expect_item("message", uniq("bob"), "I am typ")

    bob.page.close()
    alice.wait_until(lambda: alice.member_names() == [uniq("alice")], "bob to leave the member list")
    expect(alice.messages.locator("li.system").last).to_have_text(f"{uniq('bob')} left")


def test_direct_message_reaches_every_tab_of_its_user_and_no_one_else(
    server: LiveServer, browse: Browse, uniq: Uniq
) -> None:
    alice = browse(server, "alice")
    bob_tab1 = browse(server, "bob-tab1")
    bob_tab2 = browse(server, "bob-tab2", tab=bob_tab1)
    carol = browse(server, "carol")
    for chat, name in ((alice, "alice"), (bob_tab1, "bob"), (bob_tab2, "bob"), (carol, "carol")):
        chat.sign_in(uniq(name))
    spread(alice, bob_tab1, bob_tab2, carol)
    room = uniq("hall")
    for chat in (alice, bob_tab1, carol):  # bob's second tab stays outside any room
        chat.join(room)

    alice.say(f"/msg {uniq('bob')} hello bob, just you")
    alice.expect_item("direct", f"✉ you → {uniq('bob')}", "hello bob, just you")
    for tab in (bob_tab1, bob_tab2):
        tab.expect_item("direct", f"✉ {uniq('alice')} → you", "hello bob, just you")
        assert [f["text"] for f in tab.frames if f["type"] == "direct"] == ["hello bob, just you"]
    carol.page.wait_for_timeout(1000)
    for chat in (bob_tab1, carol):  # writing a /msg is not typing in the room
        assert not [f for f in chat.frames if f["type"] == "typing" and f["from"] == uniq("alice")], chat.label
    for chat in (alice, carol):
        assert not [f for f in chat.frames if f["type"] == "direct"], chat.label
    expect(carol.messages.locator("li.direct")).to_have_count(0)
    expect(alice.messages.locator("li.direct")).to_have_count(1)

    # the other way, from a tab outside any room
    bob_tab2.say(f"/msg {uniq('alice')} thanks")
    alice.expect_item("direct", f"✉ {uniq('bob')} → you", "thanks")
    expect(bob_tab1.messages.locator("li.direct")).to_have_count(1)


XSS = ['<img src=x onerror="window.__pwned=1;alert(1)">', "<svg onload=alert(2)></svg>",
       "<script>alert(3)</script>", "</span><b>bold</b> &amp; &lt;"]


def test_user_text_is_shown_as_text_and_never_runs(server: LiveServer, browse: Browse, uniq: Uniq) -> None:
    alice, bob = browse(server, "alice"), browse(server, "bob")
    alice.sign_in(uniq("alice"))
    bob.sign_in(uniq("bob"))
    spread(alice, bob)
    room = uniq("xss")
    alice.join(room)
    bob.join(room)
    for payload in XSS:
        alice.say(payload)
    alice.say(f"/msg {uniq('bob')} {XSS[0]}")
    for payload in XSS:
        bob.expect_item("message", uniq("alice"), payload)
    bob.expect_item("direct", f"✉ {uniq('alice')} → you", XSS[0])
    bob.page.wait_for_timeout(500)  # an injected <img> would have failed to load and fired by now
    for chat in (alice, bob):
        assert chat.dialogs == [], chat.label
        assert chat.page.evaluate("window.__pwned") is None, chat.label
        for tag in ("img", "svg", "script", "b"):
            expect(chat.messages.locator(tag)).to_have_count(0)


def test_shared_image_renders_on_the_other_side(server: LiveServer, browse: Browse, uniq: Uniq) -> None:
    alice, bob = browse(server, "alice"), browse(server, "bob")
    alice.sign_in(uniq("alice"))
    bob.sign_in(uniq("bob"))
    spread(alice, bob)
    room = uniq("pics")
    alice.join(room)
    bob.join(room)
    image = png(8, 6)
    alice.page.set_input_files("#image", files=FilePayload(name="dot.png", mimeType="image/png", buffer=image))
    for chat in (bob, alice):
        shown = chat.messages.locator("li.image img")
        expect(shown).to_have_count(1)
        expect(shown).to_have_attribute("alt", f"image from {uniq('alice')}")
        shown.evaluate("(img) => img.decode()")
        assert shown.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [8, 6]
        assert {"type": "<binary>", "size": len(image)} in chat.frames
        header = chat.wait_frame("share", room=room)
        assert (header["from"], header["mime"], header["size"]) == (uniq("alice"), "image/png", len(image))


@pytest.mark.parametrize("kind", ["forged", "expired"])
def test_bad_token_is_refused_and_the_page_says_so(server: LiveServer, browse: Browse, uniq: Uniq, kind: str) -> None:
    bob = browse(server, "bob")
    bob.sign_in(uniq("bob"))
    mallory = browse(server, "mallory")
    if kind == "forged":
        claims = {"sub": uniq("mallory"), "sid": "s", "iss": "realtime-chat", "aud": "realtime-chat",
                  "exp": int(time.time()) + 3600}
        token, reason = jwt.encode(claims, "not-the-server-secret-" + "x" * 16, algorithm=ALGORITHM), "invalid token"
    else:
        settings = Settings.model_validate({"secret_key": server.env["APP_SECRET_KEY"]})
        token, reason = issue_token(settings, uniq("mallory"), "s", ttl=1), "token expired"
        time.sleep(2.1)
    mallory.page.evaluate("([token, user]) => { sessionStorage.setItem('chat.token', token);"
                          " sessionStorage.setItem('chat.user', user); }", [token, uniq("mallory")])
    mallory.page.reload()

    expect(mallory.status).to_have_attribute("data-state", "refused")
    expect(mallory.banner).to_be_visible()
    expect(mallory.banner).to_have_text(f"Connection refused: {reason}. Please sign in again.")
    expect(mallory.banner).to_have_class("banner bad")
    expect(mallory.page.locator("#login-error")).to_have_text(f"Refused: {reason}")
    expect(mallory.page.locator("#login")).to_be_visible()
    expect(mallory.page.locator("#chat")).to_be_hidden()
    assert mallory.page.evaluate("sessionStorage.getItem('chat.token')") is None
    mallory.page.wait_for_timeout(1500)
    assert len(mallory.sockets) == 1, "a refused page must not keep reconnecting"
    assert "welcome" not in [f["type"] for f in mallory.frames]

    # signing in again gets a fresh token; the user then chats across workers as usual
    mallory.sign_in(uniq("mallory"))
    expect(mallory.banner).to_be_hidden()
    spread(bob, mallory)
    room = uniq("after")
    bob.join(room)
    mallory.join(room)
    mallory.say("let me in")
    bob.expect_item("message", uniq("mallory"), "let me in")


def test_offline_tab_catches_up_in_order_and_its_offline_message_is_sent_once(
    server: LiveServer, browse: Browse, uniq: Uniq
) -> None:
    """The delivery contract in the page: a tab that was offline rejoins with ``since`` and shows what it
    missed once and in order; a message typed offline waits as pending and is sent once after reconnect."""
    alice, bob = browse(server, "alice"), browse(server, "bob")
    alice.sign_in(uniq("alice"))
    bob.sign_in(uniq("bob"))
    spread(alice, bob)
    room = uniq("offline")
    alice.join(room)
    bob.join(room)
    bob.say("before")
    alice.expect_item("message", uniq("bob"), "before")

    alice.page.context.set_offline(True)
    alice.page.evaluate("state.socket.close()")  # the network is gone: every reconnect attempt fails
    alice.wait_until(lambda: "reconnecting" in alice.states(), "the reconnecting state")
    missed = [f"missed {i}" for i in range(5)]
    for text in missed:
        bob.say(text)
    alice.page.fill("#text", "typed while offline")
    alice.page.press("#text", "Enter")
    expect(alice.page.locator("#text")).to_have_value("")  # taken into the outbox, shown as pending
    expect(alice.messages.locator('li[data-state="pending"] .text')).to_have_text("typed while offline")

    mark = len(alice.frames)
    alice.page.context.set_offline(False)
    joined = alice.wait_frame("joined", after=mark, room=room, timeout=30)
    assert joined["recovered"] is True and [m["text"] for m in joined["history"]] == missed
    expected = ["before", *missed, "typed while offline"]
    for chat in (alice, bob):
        chat.expect_item("message", uniq("alice"), "typed while offline")  # once, on both sides
        chat.wait_until(lambda chat=chat: [i["text"] for i in chat.items() if i["kind"] == "message"] == expected,
                        f"the messages in order: {expected}")
    expect(alice.messages.locator('li[data-state="sent"] .text')).to_have_text("typed while offline")
    acks = [f for f in alice.frames[mark:] if f.get("type") == "ack"]
    assert len({ack["seq"] for ack in acks}) == 1  # sent once: one stored message, however often acked


def test_accounts_private_room_invite_and_logout(server: LiveServer, browse: Browse, uniq: Uniq) -> None:
    alice, bob, carol = browse(server, "alice"), browse(server, "bob"), browse(server, "carol")
    for chat in (alice, bob, carol):
        chat.sign_in(uniq(chat.label))
    spread(alice, bob, carol)
    room = uniq("secret")
    alice.page.check("#room-private")
    alice.join(room)

    mark = len(carol.frames)  # not invited: refused
    carol.page.fill("#room-name", room)
    carol.page.click("#join button[type=submit]")
    assert "private" in carol.wait_frame("error", after=mark, code="forbidden")["detail"]

    alice.page.fill("#invitee", uniq("bob"))
    alice.page.click("#invite button[type=submit]")
    expect(alice.messages.locator("li.system").last).to_have_text(f"{uniq('bob')} is invited to {room}")
    bob.join(room)
    alice.say("for bob only")
    bob.expect_item("message", uniq("alice"), "for bob only")

    bob.log_out()
    assert bob.page.evaluate("sessionStorage.getItem('chat.token')") is None
    bob.page.fill("#username", uniq("bob"))
    bob.page.fill("#password", "not the password")
    bob.page.click("#login-button")
    expect(bob.page.locator("#login-error")).to_have_text("wrong user name or password")
    bob.log_in(uniq("bob"))
    bob.join(room)  # still invited after a new login
