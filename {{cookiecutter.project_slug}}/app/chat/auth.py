"""Signed, expiring access tokens (JWT, HS256) for the WebSocket and the HTTP API."""

from __future__ import annotations

import time

import jwt

from ..settings import Settings

ALGORITHM = "HS256"


class InvalidToken(ValueError):
    pass


def issue_token(settings: Settings, username: str, ttl: float | None = None) -> str:
    now = int(time.time())
    claims = {"sub": username, "iat": now, "exp": now + int(ttl if ttl is not None else settings.token_ttl_seconds)}
    return jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm=ALGORITHM)


def verify_token(settings: Settings, token: str | None) -> str:
    """The user name in a valid token; ``InvalidToken`` says why one is refused."""
    if not token:
        raise InvalidToken("missing token")
    try:
        claims = jwt.decode(token, settings.secret_key.get_secret_value(), algorithms=[ALGORITHM],
                            options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.InvalidTokenError:
        raise InvalidToken("invalid token") from None
    return str(claims["sub"])
