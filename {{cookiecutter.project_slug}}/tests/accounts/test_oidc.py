"""OIDC mode against an identity provider the test serves on loopback, with keys it generates and rotates."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from app.accounts.accounts import Accounts
from app.accounts.oidc import OidcVerifier
from app.accounts.passwords import Passwords
from app.accounts.tokens import InvalidToken, TokenExpired
from app.db.engine import make_engine

from .conftest import FAST, make_settings

AUDIENCE = "chat-client"


class Provider:
    """An issuer: ``/.well-known/openid-configuration`` and a JWKS whose keys the test sets."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}  # kid -> private key
        self.jwks_fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body: dict[str, Any] = {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/jwks"}
                elif self.path == "/jwks":
                    provider.jwks_fetches += 1
                    body = {"keys": [provider.public_jwk(kid, key) for kid, key in provider.keys.items()]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"

    @staticmethod
    def public_jwk(kid: str, key: Any) -> dict[str, Any]:
        if isinstance(key, rsa.RSAPrivateKey):
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        return {**jwk, "kid": kid, "use": "sig", "alg": "ES256"}

    def token(self, kid: str, key: Any | None = None, **claims: Any) -> str:
        key = key or self.keys[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        now = int(time.time())
        body = {"iss": self.issuer, "aud": AUDIENCE, "sub": "id-123", "preferred_username": "olga",
                "iat": now, "exp": now + 300, **claims}
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    provider = Provider()
    thread = threading.Thread(target=provider.server.serve_forever, daemon=True)
    thread.start()
    yield provider
    provider.server.shutdown()
    thread.join(5)


@pytest.fixture
def verifier(provider: Provider) -> OidcVerifier:
    provider.keys = {"rsa-1": rsa_key(), "ec-1": ec.generate_private_key(ec.SECP256R1())}
    return OidcVerifier(make_settings(auth_mode="oidc", oidc_issuer=provider.issuer, oidc_audience=AUDIENCE,
                                      oidc_refetch_cooldown_seconds=0))


async def test_rs256_and_es256_tokens_verify_through_discovery(provider: Provider, verifier: OidcVerifier) -> None:
    for kid in ("rsa-1", "ec-1"):
        username, expires = await verifier.verify(provider.token(kid))
        assert username == "olga" and expires > time.time()


async def test_keys_are_cached_and_a_rotated_key_is_fetched_once(provider: Provider, verifier: OidcVerifier) -> None:
    await verifier.verify(provider.token("rsa-1"))
    await verifier.verify(provider.token("rsa-1"))
    fetches = provider.jwks_fetches
    await verifier.verify(provider.token("rsa-1"))
    assert provider.jwks_fetches == fetches  # cached
    provider.keys = {"rsa-2": rsa_key()}  # the provider rotates: the old key is gone
    assert (await verifier.verify(provider.token("rsa-2")))[0] == "olga"
    assert provider.jwks_fetches == fetches + 1
    stranger = rsa_key()
    with pytest.raises(InvalidToken):  # an unknown kid: one refetch, then refused
        await verifier.verify(provider.token("rsa-9", key=stranger))


@pytest.mark.parametrize("claims", [{"aud": "another-client"}, {"iss": "http://evil.example"},
                                    {"preferred_username": "not a/name"}, {"preferred_username": None}])
async def test_wrong_audience_issuer_or_username_is_refused(
    provider: Provider, verifier: OidcVerifier, claims: dict[str, Any]
) -> None:
    with pytest.raises(InvalidToken):
        await verifier.verify(provider.token("rsa-1", **claims))


async def test_a_token_signed_by_a_key_not_in_the_jwks_is_refused(provider: Provider, verifier: OidcVerifier) -> None:
    with pytest.raises(InvalidToken):
        await verifier.verify(provider.token("rsa-1", key=rsa_key()))  # right kid, wrong key
    with pytest.raises(TokenExpired):
        await verifier.verify(provider.token("rsa-1", exp=int(time.time()) - 60))


async def test_the_username_claim_is_configurable(provider: Provider) -> None:
    provider.keys = {"rsa-1": rsa_key()}
    settings = make_settings(auth_mode="oidc", oidc_issuer=provider.issuer, oidc_audience=AUDIENCE,
                             oidc_username_claim="email_local", oidc_jwks_url=provider.issuer + "/jwks")
    assert (await OidcVerifier(settings).verify(provider.token("rsa-1", email_local="p.ng")))[0] == "p.ng"


def test_oidc_mode_needs_an_issuer_and_an_audience() -> None:
    with pytest.raises(ValueError, match="APP_OIDC_ISSUER"):
        OidcVerifier(make_settings(auth_mode="oidc"))


async def test_an_unreachable_provider_refuses_with_a_clear_reason() -> None:
    dead = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    issuer = f"http://127.0.0.1:{dead.server_address[1]}"
    dead.server_close()  # nothing listens there any more
    verifier = OidcVerifier(make_settings(auth_mode="oidc", oidc_issuer=issuer, oidc_audience=AUDIENCE))
    with pytest.raises(InvalidToken, match="unreachable"):
        await verifier.verify(jwt.encode({"sub": "x"}, rsa_key(), algorithm="RS256", headers={"kid": "k"}))


@pytest.fixture
async def oidc_accounts(provider: Provider, database_url: str) -> AsyncIterator[Accounts]:
    provider.keys = {"rsa-1": rsa_key()}
    engine = make_engine(database_url)
    settings = make_settings(auth_mode="oidc", oidc_issuer=provider.issuer, oidc_audience=AUDIENCE,
                             admin_usernames="olga")
    yield Accounts(settings, engine, Passwords(**FAST))
    await engine.dispose()


async def test_oidc_identities_get_a_user_row_and_their_role(provider: Provider, oidc_accounts: Accounts) -> None:
    identity = await oidc_accounts.verify(provider.token("rsa-1"))
    assert (identity.user, identity.role, identity.session) == ("olga", "admin", None)
    assert (await oidc_accounts.store.user("olga")) is not None  # private rooms can refer to the user
    with pytest.raises(InvalidToken):
        await oidc_accounts.verify(None)
