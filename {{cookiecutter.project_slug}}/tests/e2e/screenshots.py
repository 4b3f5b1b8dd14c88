"""Regenerate docs/screenshots/*.png from the real page: ``python -m tests.e2e.screenshots [--backend redis]``.

Needs Chromium (see conftest.py) and, for a distributed backend, its broker.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import tempfile
from pathlib import Path

from playwright.sync_api import Browser, FilePayload, ViewportSize, expect, sync_playwright

from ..live_server import ROOT, LiveServer, live_server, service_env
from .chat_page import RECORDER, ChatPage
from .conftest import CHROMIUM, CHROMIUM_ARGS
from .test_chat_page import png

OUT = ROOT / "docs" / "screenshots"
VIEWPORT = ViewportSize(width=1100, height=640)


def user(browser: Browser, server: LiveServer, name: str) -> ChatPage:
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(RECORDER)
    chat = ChatPage.open(context, server, name)
    chat.sign_in(name)
    return chat


def shoot(browser: Browser, server: LiveServer) -> None:
    alice, bob, carol = (user(browser, server, name) for name in ("alice", "bob", "carol"))
    alice.join("design")
    for chat in (alice, bob, carol):
        chat.join("lobby")
    alice.expect_members("alice", "bob", "carol")
    bob.say("Morning! Did the deploy go out?")
    alice.say("Yes, 3 workers behind the load balancer, all on one channel layer.")
    carol.say("Nice. Reconnects landed on another worker when I restarted one 🎉")
    bob.page.set_input_files("#image", files=FilePayload(name="graph.png", mimeType="image/png", buffer=png(120, 80)))
    alice.expect_item("message", "carol", "Nice. Reconnects landed on another worker when I restarted one 🎉")
    expect(alice.messages.locator("li.image img")).to_have_count(1)
    carol.say("/msg alice can you review my PR later?")
    alice.expect_item("direct", "✉ carol → you", "can you review my PR later?")
    bob.type_text("Looks go")
    expect(alice.page.locator("#typing")).to_have_text("bob is typing…")
    alice.page.locator("#text").fill("Sure, after lunch")
    alice.page.screenshot(path=OUT / "room.png")

    # the server goes away: the page says it is reconnecting (and comes back by itself when it returns)
    os.killpg(server.process.pid, signal.SIGTERM)
    alice.wait_until(lambda: "reconnecting" in alice.states(), "reconnecting")
    expect(alice.banner).to_contain_text("reconnecting in")
    alice.page.screenshot(path=OUT / "reconnecting.png")


def shoot_refused(browser: Browser, server: LiveServer) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    chat = ChatPage.open(context, server, "mallory")
    chat.page.evaluate("sessionStorage.setItem('chat.token', 'forged'); sessionStorage.setItem('chat.user', 'mallory')")
    chat.page.reload()
    expect(chat.status).to_have_attribute("data-state", "refused")
    chat.page.screenshot(path=OUT / "refused.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="inmemory")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    workers = 1 if args.backend == "inmemory" else 3
    env = service_env(args.backend, f"shots{secrets.token_hex(3)}")
    expect.set_options(timeout=15_000)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        with live_server(env, workers=workers, tmp_path=Path(tmp)) as server:
            shoot_refused(browser, server)
        with live_server(env, workers=workers, tmp_path=Path(tmp)) as server:
            shoot(browser, server)
        browser.close()
    print("\n".join(str(path) for path in sorted(OUT.glob("*.png"))))


if __name__ == "__main__":
    main()
