"""The HTTP API: login, rooms, posting and notifying from outside a socket, health, metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, StringConstraints

from ..metrics import render
from .auth import InvalidToken, issue_token, verify_token
from .protocol import NAME_PATTERN, RoomName, Text, UserName
from .service import ChatService

router = APIRouter()
bearer = HTTPBearer(auto_error=False)


def get_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


Service = Annotated[ChatService, Depends(get_service)]


def current_user(service: Service, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
    try:
        return verify_token(service.settings, credentials.credentials if credentials else None)
    except InvalidToken as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


User = Annotated[str, Depends(current_user)]


class Login(BaseModel):
    username: Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class Token(BaseModel):
    token: str
    expires_in: int


class Room(BaseModel):
    name: str
    members: int


class Members(BaseModel):
    room: str
    members: list[str]


class PostText(BaseModel):
    text: Text


class Accepted(BaseModel):
    id: str


@router.post("/api/login", response_model=Token, tags=["auth"])
async def login(body: Login, service: Service) -> Token:
    """Issue a signed, expiring token for a nickname (plug your identity provider in here)."""
    ttl = service.settings.token_ttl_seconds
    return Token(token=issue_token(service.settings, body.username), expires_in=ttl)


@router.get("/api/rooms", response_model=list[Room], tags=["rooms"])
async def list_rooms(service: Service) -> list[Room]:
    return [Room(name=name, members=count) for name, count in service.presence.rooms().items()]


@router.get("/api/rooms/{room}/members", response_model=Members, tags=["rooms"])
async def room_members(room: RoomName, service: Service) -> Members:
    return Members(room=room, members=sorted(service.presence.members(room)))


@router.post("/api/rooms/{room}/messages", response_model=Accepted, status_code=202, tags=["rooms"])
async def post_message(room: RoomName, body: PostText, service: Service, user: User) -> Accepted:
    message = await service.post_message(room, user, body.text)
    return Accepted(id=message["id"])


@router.post("/api/users/{username}/notify", response_model=Accepted, status_code=202, tags=["users"])
async def notify_user(username: UserName, body: PostText, service: Service, user: User) -> Accepted:
    message = await service.notify_user(username, user, body.text)
    return Accepted(id=message["id"])


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"], responses={503: {"description": "the broker does not answer"}})
async def readyz(service: Service, response: Response) -> dict[str, Any]:
    """The channel layer's broker answers (one group send to an empty group)."""
    try:
        await service.layer.group_send("readyz", {"type": "readyz"})
    except Exception as exc:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"status": "unavailable", "detail": f"{type(exc).__name__}: {exc}"}
    return {"status": "ok", "worker": service.worker_id}


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics() -> Response:
    body, content_type = render()
    return Response(body, media_type=content_type)
