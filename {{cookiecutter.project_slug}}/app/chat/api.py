"""The HTTP API: rooms, posting and notifying from outside a socket, health, metrics (accounts: app/accounts/api.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel

from ..accounts.api import AccessDep, CurrentUser, UserOrService
from ..accounts.rooms import Forbidden
from ..metrics import render
from .protocol import RoomName, Text, UserName
from .service import ChatService

router = APIRouter()


def get_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


Service = Annotated[ChatService, Depends(get_service)]


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


def forbidden(exc: Forbidden) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, str(exc))


@router.get("/api/rooms", response_model=list[Room], tags=["rooms"])
async def list_rooms(service: Service, identity: UserOrService, access: AccessDep) -> list[Room]:
    """Rooms with someone in them, without the private rooms the caller is not a member of."""
    rooms = service.presence.rooms()
    if identity.role != "service":
        rooms = await access.visible(rooms, identity.user)
    return [Room(name=name, members=count) for name, count in rooms.items()]


@router.get("/api/rooms/{room}/members", response_model=Members, tags=["rooms"],
            responses={403: {"description": "private room, not a member"}})
async def room_members(room: RoomName, service: Service, identity: CurrentUser, access: AccessDep) -> Members:
    try:
        await access.check_enter(room, identity.user)
    except Forbidden as exc:
        raise forbidden(exc) from None
    return Members(room=room, members=sorted(service.presence.members(room)))


@router.post("/api/rooms/{room}/messages", response_model=Accepted, status_code=202, tags=["rooms"],
             responses={403: {"description": "not a member of the room"}})
async def post_message(room: RoomName, body: PostText, service: Service, identity: CurrentUser,
                       access: AccessDep) -> Accepted:
    """Post as the caller, who must be in the room on a socket (or, for a private room, invited)."""
    try:
        await access.check_post(room, identity.user)
    except Forbidden as exc:
        raise forbidden(exc) from None
    message = await service.post_message(room, identity.user, body.text)
    return Accepted(id=message["id"])


@router.post("/api/users/{username}/notify", response_model=Accepted, status_code=202, tags=["users"])
async def notify_user(username: UserName, body: PostText, service: Service, identity: CurrentUser) -> Accepted:
    message = await service.notify_user(username, identity.user, body.text)
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


@router.get("/metrics", tags=["ops"], response_class=Response, responses={401: {}, 403: {}})
async def metrics(identity: UserOrService) -> Response:
    """For APP_SERVICE_TOKEN (Prometheus' bearer token) or an admin's token."""
    if identity.role not in ("service", "admin"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admins only")
    body, content_type = render()
    return Response(body, media_type=content_type)
