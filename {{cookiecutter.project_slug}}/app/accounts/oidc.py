"""External identity: RS256/ES256 tokens of an OpenID Connect issuer, checked against its JWKS.

PyJWKClient caches the key set; a token signed with a key id it does not know makes it fetch the
set once more (key rotation), so a new key works at once and an unknown one is refused.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import jwt

from ..settings import Settings
from .tokens import InvalidToken, TokenExpired, checked_subject

ALGORITHMS = ["RS256", "ES256"]


class OidcVerifier:
    def __init__(self, settings: Settings) -> None:
        if not settings.oidc_issuer or not settings.oidc_audience:
            raise ValueError("APP_AUTH_MODE=oidc needs APP_OIDC_ISSUER and APP_OIDC_AUDIENCE")
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.claim = settings.oidc_username_claim
        self._jwks_url = settings.oidc_jwks_url
        self._cooldown = settings.oidc_refetch_cooldown_seconds
        self._client: jwt.PyJWKClient | None = None

    def _jwks_client(self) -> jwt.PyJWKClient:
        if self._client is None:
            url = self._jwks_url or self._discover()
            self._client = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=10,
                                           cooldown_duration=self._cooldown)
        return self._client

    def _discover(self) -> str:
        """The issuer's ``jwks_uri`` from its OpenID configuration."""
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        with urllib.request.urlopen(url, timeout=10) as response:  # the configured issuer
            return str(json.load(response)["jwks_uri"])

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            key = self._jwks_client().get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=ALGORITHMS, audience=self.audience,
                                                issuer=self.issuer, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token expired") from None
        except (jwt.PyJWKClientConnectionError, OSError, KeyError, json.JSONDecodeError):
            raise InvalidToken("identity provider unreachable") from None
        except (jwt.InvalidTokenError, jwt.PyJWKClientError):
            raise InvalidToken("invalid token") from None
        return checked_subject(claims, self.claim)

    async def verify(self, token: str) -> tuple[str, float]:
        """``(username, exp)`` of a valid token (the key fetch is blocking I/O: it runs in a thread)."""
        claims = await asyncio.to_thread(self._decode, token)
        return str(claims[self.claim]), float(claims["exp"])
