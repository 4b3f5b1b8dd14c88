"""The protocol's edges on a real server: auth, origins, invalid frames, limits, metrics."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from app.accounts.tokens import issue_token
from app.settings import Settings

from ..live_server import TEST_SECRET, LiveServer, live_server, service_env
from .client import ChatClient

SERVICE_TOKEN = "service-token-for-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = service_env("inmemory", "protocol", APP_RATE_LIMIT_BURST="20", APP_RATE_LIMIT_PER_SECOND="5",
                      APP_SEND_QUEUE_SIZE="8", APP_AUTH_TIMEOUT_SECONDS="1", APP_SERVICE_TOKEN=SERVICE_TOKEN)
    with live_server(env, workers=1, tmp_path=tmp_path_factory.mktemp("server")) as running:
        yield running


async def closed_with(server: LiveServer, first: str | None, query: str = "", **connect: object) -> tuple[int, str]:
    """How the server closes a socket whose first frame is ``first`` (``None``: it sends nothing)."""
    async with websockets.connect(f"{server.ws_url}{query}", **connect) as socket:  # type: ignore[arg-type]
        if first is not None:
            await socket.send(first)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(socket.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def auth(token: str) -> str:
    return json.dumps({"type": "auth", "token": token})


FIRST_FRAME = 'the first frame must be {"type": "auth", "token": "..."}'


@pytest.mark.parametrize(
    ("first", "reason"),
    [(auth("forged.token.value"), "invalid token"), (auth(""), "missing token"),
     ('{"type": "join", "room": "x"}', FIRST_FRAME), ('{"type": "auth"}', FIRST_FRAME), ("not json", FIRST_FRAME)],
)
async def test_a_bad_auth_frame_is_refused_with_1008(server: LiveServer, first: str | None, reason: str) -> None:
    assert await closed_with(server, first) == (1008, reason)


async def test_no_auth_frame_in_time_closes_with_4408(server: LiveServer) -> None:
    """Like an idle socket (the page reconnects): a storm's loaded worker may read a timely auth frame late."""
    assert await closed_with(server, None) == (4408, "no auth frame in time")


async def test_a_token_in_the_url_is_refused(server: LiveServer) -> None:
    token = server.login("urluser")
    code, reason = await closed_with(server, None, f"?token={token}")
    assert code == 1008 and "not accepted" in reason
    assert token.split(".")[2] not in server.logs()  # tests/test_logs.py: a URL's token is redacted if logged


async def test_expired_foreign_and_unknown_session_tokens_are_refused(server: LiveServer) -> None:
    settings = Settings(secret_key=TEST_SECRET)
    server.login("old")
    assert await closed_with(server, auth(issue_token(settings, "old", "sid", ttl=-5))) == (1008, "token expired")
    foreign = issue_token(Settings(secret_key="another-secret-" + "y" * 32), "old", "sid")
    assert await closed_with(server, auth(foreign)) == (1008, "invalid token")
    forged_session = issue_token(settings, "old", "not-a-session")  # signed right, but no such session
    assert await closed_with(server, auth(forged_session)) == (1008, "session ended")
    other_audience = issue_token(Settings(secret_key=TEST_SECRET, token_audience="another-app"), "old", "sid")
    assert await closed_with(server, auth(other_audience)) == (1008, "invalid token")


async def test_foreign_origin_is_refused(server: LiveServer) -> None:
    code, reason = await closed_with(server, None, origin="http://evil.example")  # refused before any frame
    assert code == 1008 and "evil.example" in reason


@pytest.mark.parametrize(
    ("frame", "code", "detail"),
    [
        ("not json", "invalid_json", "not JSON"),
        ("[1, 2]", "invalid_frame", "frame"),
        ('{"type": "nope"}', "invalid_frame", "does not match"),
        ('{"type": "join"}', "invalid_frame", "join.room: Field required"),
        ('{"type": "join", "room": "a/b"}', "invalid_frame", "join.room"),
        ('{"type": "message", "room": "x", "text": ""}', "invalid_frame", "message.text"),
        ('{"type": "message", "room": "x", "text": "hi", "extra": 1}', "invalid_frame", "extra"),
        ('{"type": "message", "room": "never-joined", "text": "hi"}', "not_in_room", "never-joined"),
        ('{"type": "share", "room": "x", "mime": "text/html"}', "invalid_frame", "share.mime"),
        ('{"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}', "invalid_frame", "type"),
    ],
)
async def test_invalid_frames_get_an_error_and_the_connection_stays(
    server: LiveServer, frame: str, code: str, detail: str
) -> None:
    client = await ChatClient.connect(server.ws_url, server.login("frank"))
    await client.connection.send(frame)
    error = await client.expect("error")
    assert error["code"] == code and detail in error["detail"]
    await client.send(type="ping")
    await client.expect("pong")
    await client.close()


async def test_binary_without_share_header_is_an_error(server: LiveServer) -> None:
    client = await ChatClient.connect(server.ws_url, server.login("gus"))
    await client.connection.send(b"\x89PNG")
    assert (await client.expect("error"))["code"] == "unexpected_binary"
    await client.close()


async def test_image_share_relays_bytes(server: LiveServer) -> None:
    sender = await ChatClient.connect(server.ws_url, server.login("hal"))
    receiver = await ChatClient.connect(server.ws_url, server.login("ida"))
    await sender.join("pics")
    await receiver.join("pics")
    await sender.send(type="share", room="pics", mime="image/png")
    await sender.connection.send(b"\x89PNG\r\n\x1a\nDATA")
    header = await receiver.expect("share")
    assert (header["from"], header["mime"], header["size"]) == ("hal", "image/png", 12)
    assert await receiver.expect_bytes() == b"\x89PNG\r\n\x1a\nDATA"
    await sender.close()
    await receiver.close()


@pytest.mark.parametrize(("payload", "limit"), [("x" * 20_000, "16384"), (b"x" * 300_000, "262144")])
async def test_oversized_frames_close_with_1009(server: LiveServer, payload: str | bytes, limit: str) -> None:
    client = await ChatClient.connect(server.ws_url, server.login("jay"))
    await client.connection.send(payload)
    with pytest.raises(ConnectionClosed) as closed:
        await client.expect("never")
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009 and limit in closed.value.rcvd.reason


async def test_over_the_rate_one_error_then_the_connection_stays(server: LiveServer) -> None:
    client = await ChatClient.connect(server.ws_url, server.login("kim"))
    await client.join("flood")
    for _ in range(25):  # burst 20: five over the limit, each dropped, one error frame for them all
        await client.send(type="typing", room="flood")
    assert (await client.expect("error"))["code"] == "rate_limited"
    await asyncio.sleep(1)
    await client.send(type="ping")
    await client.expect("pong")
    assert [f for f in client.seen if isinstance(f, dict) and f.get("type") == "error"] == [
        {"type": "error", "code": "rate_limited", "detail": "too many frames; slow down"}
    ]
    await client.close()


async def test_flood_is_closed_with_1008_and_others_keep_being_served(server: LiveServer) -> None:
    client = await ChatClient.connect(server.ws_url, server.login("kim"))
    await client.join("flood")
    for _ in range(200):
        try:
            await client.send(type="typing", room="flood")
        except ConnectionClosed:
            break
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await client.expect("never", timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    other = await ChatClient.connect(server.ws_url, server.login("lea"))
    await other.send(type="ping")
    await other.expect("pong")
    await other.close()


def sample(text: str, name: str) -> float:
    """The value of one sample line of a Prometheus exposition (0 when absent)."""
    return next((float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")), 0.0)


def scrape(server: LiveServer, token: str = "") -> tuple[int, str]:
    request = urllib.request.Request(server.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_metrics_are_for_the_service_token_and_admins(server: LiveServer) -> None:
    assert scrape(server)[0] == 401
    assert scrape(server, server.login("not-an-admin"))[0] == 403
    assert scrape(server, SERVICE_TOKEN)[0] == 200


async def test_metrics_and_health(server: LiveServer) -> None:
    assert server.get("/healthz") == (200, {"status": "ok"})
    status, ready = server.get("/readyz")
    assert status == 200 and ready["status"] == "ok"
    before = scrape(server, SERVICE_TOKEN)[1]
    client = await ChatClient.connect(server.ws_url, server.login("max"))
    await client.connection.send("{}")
    await client.expect("error")
    for _ in range(3):
        await client.send(type="ping")
        await client.expect("pong")
    text = scrape(server, SERVICE_TOKEN)[1]  # frame counts are tallied in memory and flushed when served
    await client.close()
    for name, sent in (('chat_frames_in_total{kind="ping"}', 3), ('chat_frames_out_total{kind="pong"}', 3)):
        assert sample(text, name) - sample(before, name) == sent, name
    assert "chat_errors_total" in text and "chat_layer_send_seconds" in text


def test_production_refuses_the_default_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # importing app.main (another test module) loads the project's .env, with its real secret, into os.environ
    monkeypatch.delenv("APP_SECRET_KEY", raising=False)
    with pytest.raises(ValueError, match="APP_SECRET_KEY must be set"):
        Settings(environment="production")
    with pytest.raises(ValueError, match="at least 32"):
        Settings(environment="production", secret_key="short")


def test_malformed_app_setting_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_HISTORY_SIZE", "many")
    with pytest.raises(ValueError, match="history_size"):
        Settings()


def test_openapi_lists_the_api(tmp_path: Path) -> None:
    from app.main import create_app

    paths = create_app(Settings(secret_key=TEST_SECRET)).openapi()["paths"]
    assert {"/api/signup", "/api/login", "/api/logout", "/api/rooms/{room}/invites",
            "/api/rooms", "/api/rooms/{room}/messages", "/api/users/{username}/notify",
            "/healthz", "/readyz", "/metrics"} <= set(paths)
    has_jobs = (Path(__file__).parents[2] / "app" / "worker").is_dir()  # generated with use_celery=yes
    assert ("/api/jobs/announce" in paths) == has_jobs
