"""Drive the chat page (app/static) in one browser tab, as a user would, and observe what it shows."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from playwright.sync_api import BrowserContext, Locator, Page, WebSocket, expect

from ..chat.client import unpack
from ..live_server import TEST_PASSWORD, LiveServer

#: Runs before the page's own script on every load: records each status badge state and banner text the
#: page shows (MutationObserver callbacks run as microtasks, so even a state shown for a millisecond counts).
RECORDER = """
(() => {
  const seen = { states: [], banners: [] };
  window.__e2e = seen;
  const look = () => {
    const status = document.getElementById("status");
    const banner = document.getElementById("banner");
    if (status && seen.states[seen.states.length - 1] !== status.dataset.state) seen.states.push(status.dataset.state);
    const text = banner && !banner.hidden ? banner.textContent : "";
    if (text && seen.banners[seen.banners.length - 1] !== text) seen.banners.push(text);
  };
  const all = { subtree: true, childList: true, characterData: true, attributes: true };
  new MutationObserver(look).observe(document, all);
})();
"""

ITEMS = """
() => [...document.querySelectorAll("#messages > li")].map((li) => ({
  kind: li.className,
  from: li.querySelector(".from")?.textContent ?? null,
  text: li.querySelector(".text")?.textContent ?? li.textContent,
}))
"""


@dataclass
class ChatPage:
    """One tab: the page, the frames its sockets exchanged, and any dialog it tried to open."""

    page: Page
    server: LiveServer
    label: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    sockets: list[WebSocket] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, context: BrowserContext, server: LiveServer, label: str) -> ChatPage:
        chat = cls(context.new_page(), server, label)
        chat.page.on("websocket", chat._on_socket)
        chat.page.on("dialog", chat._on_dialog)
        chat.page.on("console", lambda message: chat.console.append(f"{message.type}: {message.text}"))
        chat.page.on("pageerror", lambda error: chat.console.append(f"pageerror: {error}"))
        chat.page.goto(server.url)
        return chat

    def _on_socket(self, socket: WebSocket) -> None:
        self.sockets.append(socket)
        socket.on("framereceived", self._on_frame)

    def _on_frame(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            self.frames.extend(unpack(payload))  # type: ignore[arg-type]
        else:
            self.frames.append({"type": "<binary>", "size": len(payload)})

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    # ------------------------------------------------------------------ what the page shows

    @property
    def status(self) -> Locator:
        return self.page.locator("#status")

    @property
    def banner(self) -> Locator:
        return self.page.locator("#banner")

    @property
    def messages(self) -> Locator:
        return self.page.locator("#messages")

    @property
    def worker(self) -> str:
        return str(self.page.evaluate("document.body.dataset.worker || ''"))

    @property
    def worker_pid(self) -> int:
        return int(self.worker.rsplit(":", 1)[1])

    def states(self) -> list[str]:
        return list(self.page.evaluate("window.__e2e.states"))

    def banners(self) -> list[str]:
        return list(self.page.evaluate("window.__e2e.banners"))

    def items(self) -> list[dict[str, str | None]]:
        return list(self.page.evaluate(ITEMS))

    def member_names(self) -> list[str]:
        return list(self.page.locator("#members li").evaluate_all("(items) => items.map((li) => li.dataset.user)"))

    def expect_item(self, kind: str, sender: str, text: str, count: int = 1) -> None:
        """``count`` entries of class ``kind`` from ``sender`` reading exactly ``text`` are in the conversation."""
        exact = re.compile(f"^{re.escape(text)}$")
        items = self.page.locator(f"#messages > li.{kind}").filter(
            has=self.page.locator(".from", has_text=re.compile(f"^{re.escape(sender)}$"))
        ).filter(has=self.page.locator(".text", has_text=exact))
        expect(items, f"{self.label}: {kind} {sender!r}: {text!r}").to_have_count(count)

    def expect_members(self, *users: str) -> None:
        self.wait_until(lambda: sorted(self.member_names()) == sorted(users), f"members {sorted(users)}")

    def wait_until(self, condition: Any, what: str, timeout: float = 15) -> None:
        """Poll ``condition`` (a Python callable) while letting Playwright deliver events."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.label}: timed out after {timeout}s waiting for {what}")
            self.page.wait_for_timeout(100)

    def wait_frame(self, kind: str, after: int = 0, timeout: float = 15, **match: Any) -> dict[str, Any]:
        """The first frame of ``kind`` (matching ``match``) received at index ``after`` or later."""

        def found() -> dict[str, Any] | None:
            for frame in self.frames[after:]:
                if frame.get("type") == kind and all(frame.get(k) == v for k, v in match.items()):
                    return frame
            return None

        self.wait_until(lambda: found() is not None, f"a {kind!r} frame {match or ''}", timeout)
        frame = found()
        assert frame is not None
        return frame

    # ------------------------------------------------------------------ what the user does

    def sign_in(self, username: str, password: str = TEST_PASSWORD) -> None:
        """Sign up as ``username``; if the name is taken (an earlier test), log in with the same password."""
        self.page.fill("#username", username)
        self.page.fill("#password", password)
        self.page.click("#signup-button")
        error = self.page.locator("#login-error")
        self.wait_until(lambda: self.status.get_attribute("data-state") != "offline" or "taken" in error.inner_text(),
                        "signed up, or the name taken")
        if "taken" in error.inner_text():
            self.log_in(username, password)
            return
        self.wait_online()
        expect(self.page.locator("#whoami")).to_have_text(f"signed in as {username}")

    def log_in(self, username: str, password: str = TEST_PASSWORD) -> None:
        self.page.fill("#username", username)
        self.page.fill("#password", password)
        self.page.click("#login-button")
        self.wait_online()
        expect(self.page.locator("#whoami")).to_have_text(f"signed in as {username}")

    def log_out(self) -> None:
        self.page.click("#logout")
        expect(self.page.locator("#login")).to_be_visible()
        expect(self.page.locator("#login-error")).to_have_text("Logged out.")

    def wait_online(self, timeout: float = 20) -> None:
        expect(self.status).to_have_attribute("data-state", "online", timeout=timeout * 1000)
        self.page.wait_for_function("Boolean(document.body.dataset.worker)")

    def move_off(self, taken: set[str], attempts: int = 60) -> str:
        """Reload until the page is served by a worker not in ``taken`` (the page rejoins its rooms)."""
        for _ in range(attempts):
            if self.worker not in taken:
                return self.worker
            self.page.reload()
            self.wait_online()
        raise AssertionError(f"{self.label}: still on {sorted(taken)} after {attempts} reloads")

    def join(self, room: str) -> None:
        mark = len(self.frames)
        self.page.fill("#room-name", room)
        self.page.click("#join button[type=submit]")
        self.wait_frame("joined", after=mark, room=room)
        expect(self.page.locator("#room-title")).to_have_text(f"# {room}")

    def type_text(self, text: str) -> None:
        self.page.locator("#text").press_sequentially(text, delay=10)

    def say(self, text: str) -> None:
        self.page.fill("#text", text)
        self.page.press("#text", "Enter")
        expect(self.page.locator("#text")).to_have_value("")
