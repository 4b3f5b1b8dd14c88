"""The accounts API: signup, login, logout, private rooms and invites; the bearer-token dependencies."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, StringConstraints

from ..chat.protocol import NAME_PATTERN, RoomName, UserName, session_group
from .accounts import Accounts, BadCredentials, Throttled
from .rooms import Forbidden, RoomAccess
from .store import NameTaken
from .tokens import Identity, InvalidToken

router = APIRouter()
bearer = HTTPBearer(auto_error=False)


def get_accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


def get_access(request: Request) -> RoomAccess:
    access: RoomAccess = request.app.state.access
    return access


AccountsDep = Annotated[Accounts, Depends(get_accounts)]
AccessDep = Annotated[RoomAccess, Depends(get_access)]


async def current_identity(accounts: AccountsDep,
                           credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Identity:
    try:
        return await accounts.verify(credentials.credentials if credentials else None)
    except InvalidToken as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


CurrentUser = Annotated[Identity, Depends(current_identity)]
SERVICE = Identity("service", "service", None, float("inf"))


async def user_or_service(accounts: AccountsDep,
                          credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Identity:
    """A signed-in user, or APP_SERVICE_TOKEN (role ``service``: read-only ops endpoints)."""
    secret = accounts.settings.service_token.get_secret_value()
    if secret and credentials and hmac.compare_digest(credentials.credentials.encode(), secret.encode()):
        return SERVICE
    return await current_identity(accounts, credentials)


UserOrService = Annotated[Identity, Depends(user_or_service)]


async def require_admin(identity: CurrentUser) -> Identity:
    if not identity.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admins only")
    return identity


Admin = Annotated[Identity, Depends(require_admin)]


class Credentials(BaseModel):
    username: Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
    password: Annotated[str, StringConstraints(max_length=1024)]


class Token(BaseModel):
    token: str
    expires_in: int


class NewRoom(BaseModel):
    name: RoomName
    private: bool = True


class Invite(BaseModel):
    username: UserName


def _local_only(accounts: Accounts) -> None:
    if accounts.settings.auth_mode != "local":
        raise HTTPException(status.HTTP_404_NOT_FOUND, "accounts live at the identity provider (APP_AUTH_MODE=oidc):"
                                                       " sign in there and send its token")


@router.post("/api/signup", response_model=Token, status_code=201, tags=["auth"],
             responses={409: {"description": "name taken"}, 422: {"description": "reserved name, short password"}})
async def signup(body: Credentials, accounts: AccountsDep) -> Token:
    _local_only(accounts)
    minimum = accounts.settings.password_min_length
    if len(body.password) < minimum:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"password: at least {minimum} characters")
    try:
        token = await accounts.signup(body.username, body.password)
    except NameTaken:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the name {body.username!r} is taken") from None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
    return Token(token=token, expires_in=accounts.settings.token_ttl_seconds)


@router.post("/api/login", response_model=Token, tags=["auth"],
             responses={401: {"description": "wrong user name or password"}, 429: {"description": "throttled"}})
async def login(body: Credentials, request: Request, accounts: AccountsDep, response: Response) -> Token:
    _local_only(accounts)
    address = request.client.host if request.client else "unknown"
    try:
        token = await accounts.login(body.username, body.password, address)
    except Throttled as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc),
                            headers={"Retry-After": str(exc.retry_after)}) from None
    except BadCredentials as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    return Token(token=token, expires_in=accounts.settings.token_ttl_seconds)


@router.post("/api/logout", status_code=204, tags=["auth"])
async def logout(identity: CurrentUser, request: Request, accounts: AccountsDep) -> Response:
    """Revoke the session; its sockets on every worker close with 4001."""
    _local_only(accounts)
    await accounts.logout(identity)
    if identity.session is not None:
        await request.app.state.chat.group_send(session_group(identity.session), {"type": "session.revoked"})
    return Response(status_code=204)


@router.post("/api/rooms", status_code=201, tags=["rooms"],
             responses={409: {"description": "room exists"}, 403: {"description": "in use as a public room"}})
async def create_room(body: NewRoom, identity: CurrentUser, access: AccessDep) -> dict[str, object]:
    """Create a private room owned by the caller (public rooms need no creation: join them)."""
    if not body.private:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "public rooms exist by joining them")
    try:
        await access.create_private(body.name, identity.user)
    except NameTaken:
        raise HTTPException(status.HTTP_409_CONFLICT, f"room {body.name!r} exists") from None
    except Forbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    return {"name": body.name, "private": True, "owner": identity.user}


@router.post("/api/rooms/{room}/invites", status_code=201, tags=["rooms"],
             responses={403: {"description": "not the owner"}, 404: {"description": "no such user"}})
async def invite(room: RoomName, body: Invite, identity: CurrentUser, access: AccessDep) -> dict[str, str]:
    try:
        username = await access.invite(room, identity.user, body.username)
    except Forbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return {"room": room, "username": username}
