"""A room with more members than ``APP_MEMBER_LIST_LIMIT``: the page lists the names it knows, applies the
``presence`` deltas to them, shows the room's count and "and N more" for the rest."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from playwright.sync_api import expect
from websockets.sync.client import ClientConnection, connect

from ..chat.client import unpack
from ..live_server import LiveServer, live_server, service_env
from .conftest import Browse

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def small_lists(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One in-memory worker (every count is exact at once) that lists 3 names at most."""
    env = service_env("inmemory", f"e2e{secrets.token_hex(4)}", APP_MEMBER_LIST_LIMIT="3")
    with live_server(env, workers=1, tmp_path=tmp_path_factory.mktemp("members")) as running:
        yield running


def member(server: LiveServer, name: str, room: str, sockets: ExitStack) -> ClientConnection:
    """A socket of ``name`` in ``room``, closed with ``sockets``."""
    socket = connect(server.ws_url)
    sockets.callback(socket.close)
    socket.send(json.dumps({"type": "auth", "token": server.login(name)}))
    socket.send(json.dumps({"type": "join", "room": room}))
    while not any(isinstance(f, dict) and f["type"] == "joined" for f in unpack(socket.recv(timeout=10))):
        pass
    return socket


def test_a_room_larger_than_the_list(small_lists: LiveServer, browse: Browse) -> None:
    server, suffix = small_lists, secrets.token_hex(2)
    room, names = f"big-{suffix}", [f"m{n}-{suffix}" for n in range(1, 7)]
    zed = f"zed-{suffix}"  # sorts after every member: not among the first 3
    page = browse(server, "zed")
    page.sign_in(zed)
    with ExitStack() as sockets:
        opened = {name: member(server, name, room, sockets) for name in names[:5]}
        page.page.wait_for_timeout(500)  # their presence window is over: the page's first frame of it is joined
        page.join(room)
        joined = page.wait_frame("joined", room=room)
        assert (joined["members"], joined["count"], joined["truncated"]) == (names[:3], 6, True)
        count, more = page.page.locator("#member-count"), page.page.locator("#members-more")

        # the first 3 and the page's own user, of 6
        page.expect_members(*names[:3], zed)
        expect(count).to_have_text("(6)")
        expect(more).to_have_text("and 2 more")
        expect(page.page.locator(f'#rooms li[data-room="{room}"] .count')).to_have_text("6")

        opened[names[5]] = member(server, names[5], room, sockets)  # a presence delta adds the name and the count
        page.expect_members(*names[:3], names[5], zed)
        expect(count).to_have_text("(7)")
        expect(more).to_have_text("and 2 more")

        opened.pop(names[0]).close()  # and one removes it
        page.expect_members(names[1], names[2], names[5], zed)
        expect(count).to_have_text("(6)")
        expect(more).to_have_text("and 2 more")

        for name in names[3:5]:  # the two the page never listed leave: nobody more
            opened.pop(name).close()
        expect(count).to_have_text("(4)")
        expect(more).to_be_hidden()
        assert sorted(page.member_names()) == sorted([names[1], names[2], names[5], zed])

