"""The service's own tokens: HS256 JWTs naming a user (``sub``) and a session (``sid``), with ``iss``/``aud``."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import jwt

from ..chat.protocol import NAME_PATTERN
from ..settings import Settings

ALGORITHM = "HS256"
_NAME = re.compile(NAME_PATTERN)


class InvalidToken(ValueError):
    """A token that is refused; ``str()`` says why without repeating the token."""


class TokenExpired(InvalidToken):
    pass


@dataclass(frozen=True)
class Identity:
    user: str
    role: str
    session: str | None  # None for an external (OIDC) token: it has no session here to revoke
    expires: float

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def issue_token(settings: Settings, username: str, session_id: str, ttl: float | None = None) -> str:
    now = int(time.time())
    claims = {"iss": settings.token_issuer, "aud": settings.token_audience, "sub": username, "sid": session_id,
              "iat": now, "exp": now + int(ttl if ttl is not None else settings.token_ttl_seconds)}
    return jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm=ALGORITHM)


def decode_token(settings: Settings, token: str | None) -> dict[str, Any]:
    """The checked claims of one of our tokens (signature, ``exp``, ``iss``, ``aud``, ``sub`` pattern, ``sid``)."""
    if not token:
        raise InvalidToken("missing token")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, settings.secret_key.get_secret_value(), algorithms=[ALGORITHM],
            audience=settings.token_audience, issuer=settings.token_issuer,
            options={"require": ["sub", "sid", "exp", "iss", "aud"]})
    except jwt.ExpiredSignatureError:
        raise TokenExpired("token expired") from None
    except jwt.InvalidTokenError:
        raise InvalidToken("invalid token") from None
    return checked_subject(claims, "sub")


def checked_subject(claims: dict[str, Any], claim: str) -> dict[str, Any]:
    """``claims`` when ``claim`` holds a user name of the allowed pattern."""
    name = claims.get(claim)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidToken(f"invalid token: {claim} is not a valid user name")
    return claims
