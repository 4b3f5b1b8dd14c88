"""The HTTP API: rooms, posting and notifying from outside a socket, health, metrics (accounts: app/accounts/api.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel

from ..accounts.api import AccessDep, CurrentUser, UserOrService
from ..accounts.rooms import Forbidden
from ..messages.store import ROOM
from ..metrics import render
from .asyncapi import document as asyncapi_document
from .protocol import ClientId, RoomName, Text, UserName, message_frame
from .service import ChatService, room_message

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
    #: A resend with the same client_id stores nothing new and answers the same id and seq.
    client_id: ClientId | None = None


class Accepted(BaseModel):
    id: int
    seq: int


class MessagePage(BaseModel):
    room: str
    #: Oldest first, as ``message`` frames (with ``seq``); page back with ``before`` = the first one's id.
    messages: list[dict[str, Any]]


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
    message, _ = await service.post_message(room, identity.user, body.text, body.client_id)
    return Accepted(id=message["id"], seq=message["seq"])


@router.get("/api/rooms/{room}/messages", response_model=MessagePage, tags=["rooms"],
            responses={403: {"description": "private room, not a member"}})
async def room_messages(room: RoomName, service: Service, identity: CurrentUser, access: AccessDep,
                        before: Annotated[int | None, Query(ge=1)] = None,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50) -> MessagePage:
    """Stored messages of the room older than message id ``before`` (default: the newest)."""
    try:  # the membership hook: who may read a room's history (app/accounts/rooms.py)
        await access.check_enter(room, identity.user)
    except Forbidden as exc:
        raise forbidden(exc) from None
    stored = await service.store.before(ROOM, room, before, limit)
    return MessagePage(room=room, messages=[message_frame(room_message(m)) for m in stored])


@router.post("/api/users/{username}/notify", response_model=Accepted, status_code=202, tags=["users"])
async def notify_user(username: UserName, body: PostText, service: Service, identity: CurrentUser) -> Accepted:
    message, _ = await service.notify_user(username, identity.user, body.text, body.client_id)
    return Accepted(id=message["id"], seq=message["seq"])


@router.get("/asyncapi.json", tags=["ops"])
async def asyncapi() -> dict[str, Any]:
    """The WebSocket protocol as an AsyncAPI 3.0 document (generated from the frame models)."""
    return asyncapi_document()


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
