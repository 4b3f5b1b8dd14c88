"""Browser fixtures: one headless Chromium per module, a live server per backend, a context per user.

Chromium comes from the system (``apt-get install chromium``) or ``E2E_CHROMIUM``; ``playwright install``
is not needed. On failure each test leaves a screenshot, a Playwright trace (``playwright show-trace``),
the frames and console of every tab and the server log under ``test-results/e2e/<test>/``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, expect, sync_playwright

from ..brokers import distributed_backends, installed_backends, require_broker
from ..live_server import ROOT, LiveServer, live_server, service_env
from .chat_page import RECORDER, ChatPage

CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = ROOT / "test-results" / "e2e"
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()

#: ``browse(server, label)`` opens the page in a new context (a new user); ``tab=`` opens another tab of one.
Browse = Callable[..., ChatPage]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Module-scoped, not session-scoped: while the sync API runs, its event loop counts as running in this
    thread, so an asyncio test collected after the e2e modules could not start its own loop."""
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set E2E_CHROMIUM)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _start(request: pytest.FixtureRequest, backend: str, tmp: Path) -> Iterator[LiveServer]:
    require_broker(backend)
    workers = 3 if backend != "inmemory" else 1
    with live_server(service_env(backend, f"e2e{secrets.token_hex(4)}"), workers=workers, tmp_path=tmp) as running:
        yield running


@pytest.fixture(scope="module", params=installed_backends())
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """gunicorn with 3 workers on each distributed backend, 1 worker on the in-memory one; shared by a module."""
    yield from _start(request, request.param, tmp_path_factory.mktemp(f"server-{request.param}"))


@pytest.fixture(params=distributed_backends())
def fresh_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """A server of its own with 3 workers, for a test that kills some of them."""
    yield from _start(request, request.param, tmp_path)


@pytest.fixture
def uniq() -> Callable[[str], str]:
    """Names no other test on a shared server uses: ``uniq("alice")`` -> ``alice-3f9a``."""
    suffix = secrets.token_hex(2)
    return lambda name: f"{name}-{suffix}"


@pytest.fixture
def browse(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Browse]:
    contexts: list[BrowserContext] = []
    pages: list[ChatPage] = []
    servers: list[LiveServer] = []

    def open_page(server: LiveServer, label: str, tab: ChatPage | None = None) -> ChatPage:
        if tab is None:
            context = browser.new_context(viewport={"width": 1100, "height": 700})
            context.add_init_script(RECORDER)
            context.tracing.start(title=f"{request.node.name} {label}", screenshots=True, snapshots=True)
            contexts.append(context)
        else:
            context = tab.page.context
        if server not in servers:
            servers.append(server)
        page = ChatPage.open(context, server, label)
        pages.append(page)
        return page

    yield open_page
    reports = request.node.stash.get(REPORTS, {})
    failed = any(report.failed for report in reports.values()) or "call" not in reports
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.nodeid.split("::", 1)[-1])
    if failed:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for chat in pages:
            try:
                chat.page.screenshot(path=folder / f"{chat.label}.png", full_page=True)
            except Exception as exc:  # the page may be gone; keep what can be kept
                (folder / f"{chat.label}.png.error").write_text(repr(exc))
            lines = [f"worker frames ({len(chat.frames)}):", *map(str, chat.frames), "console:", *chat.console,
                     "dialogs:", *chat.dialogs]
            (folder / f"{chat.label}.log").write_text("\n".join(lines) + "\n")
        for index, server in enumerate(servers):
            (folder / f"server-{index}.log").write_text(server.logs())
    for index, context in enumerate(contexts):
        try:
            context.tracing.stop(path=folder / f"trace-{index}.zip" if failed else None)
        finally:
            context.close()
    if failed:
        print(f"e2e artifacts: {folder}")
