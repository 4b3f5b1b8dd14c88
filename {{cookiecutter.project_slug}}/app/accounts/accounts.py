"""Sign-up, login, logout and token checks: one object per worker, shared by the HTTP API and the sockets."""

from __future__ import annotations

import contextlib

from sqlalchemy.ext.asyncio import AsyncEngine

from ..settings import Settings
from .oidc import OidcVerifier
from .passwords import Passwords
from .store import Account, AccountStore, NameTaken
from .throttle import LoginThrottle
from .tokens import Identity, InvalidToken, decode_token, issue_token

RESERVED_NAMES = frozenset({"admin", "administrator", "root", "system", "server", "support", "moderator",
                            "anonymous", "null", "everyone"})


class BadCredentials(ValueError):
    """Unknown user or wrong password: one error for both, so a login does not tell which names exist."""


class Throttled(ValueError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after} s")
        self.retry_after = retry_after


class Accounts:
    def __init__(self, settings: Settings, engine: AsyncEngine, passwords: Passwords | None = None) -> None:
        self.settings = settings
        self.store = AccountStore(engine)
        self.passwords = passwords or Passwords()
        self.throttle = LoginThrottle(engine, settings.login_attempts_per_username,
                                      settings.login_attempts_per_address, settings.login_throttle_window_seconds)
        self.oidc = OidcVerifier(settings) if settings.auth_mode == "oidc" else None
        self._known_external: set[str] = set()

    def role_for(self, account: Account) -> str:
        return "admin" if account.username.lower() in self.settings.admin_usernames else account.role

    # ------------------------------------------------------------------ local accounts

    async def signup(self, username: str, password: str) -> str:
        """A token for the new account; ``NameTaken``, or ``ValueError`` for a reserved name."""
        if username.lower() in RESERVED_NAMES:
            raise ValueError(f"the name {username!r} is reserved")
        role = "admin" if username.lower() in self.settings.admin_usernames else "member"
        account = await self.store.create_user(username, await self.passwords.hash(password), role)
        return await self._new_session(account)

    async def login(self, username: str, password: str, address: str) -> str:
        retry_after = await self.throttle.retry_after(username, address)
        if retry_after:
            raise Throttled(retry_after)
        account = await self.store.user(username)
        ok, new_hash = await self.passwords.verify(password, account.password_hash if account else None)
        if account is None or not ok:
            await self.throttle.failed(username, address)
            raise BadCredentials("wrong user name or password")
        await self.throttle.succeeded(username)
        role = self.role_for(account)
        if new_hash is not None or role != account.role:
            await self.store.update_user(account.username, password_hash=new_hash, role=role)
        return await self._new_session(account)

    async def _new_session(self, account: Account) -> str:
        ttl = self.settings.token_ttl_seconds
        session_id = await self.store.create_session(account.username, ttl)
        return issue_token(self.settings, account.username, session_id, ttl)

    async def set_password(self, username: str, password: str, role: str | None = None) -> None:
        """Create the account, or set its password (and role): ``python -m app create-admin``."""
        password_hash = await self.passwords.hash(password)
        try:
            await self.store.create_user(username, password_hash, role or "member")
        except NameTaken:
            account = await self.store.user(username)
            assert account is not None
            await self.store.update_user(account.username, password_hash=password_hash, role=role)

    async def logout(self, identity: Identity) -> None:
        if identity.session is not None:
            await self.store.revoke_session(identity.session)

    # ------------------------------------------------------------------ every request and socket

    async def verify(self, token: str | None) -> Identity:
        """Who holds ``token``: ``InvalidToken`` (``TokenExpired``) says why it is refused."""
        if self.oidc is not None:
            if not token:
                raise InvalidToken("missing token")
            username, expires = await self.oidc.verify(token)
            return Identity(username, await self._external_role(username), None, expires)
        claims = decode_token(self.settings, token)
        account = await self.store.session_account(str(claims["sid"]), str(claims["sub"]))
        if account is None:
            raise InvalidToken("session ended")
        return Identity(account.username, self.role_for(account), str(claims["sid"]), float(claims["exp"]))

    async def _external_role(self, username: str) -> str:
        """An external user gets a row on first sight (private rooms refer to users)."""
        if username not in self._known_external:
            with contextlib.suppress(NameTaken):
                await self.store.create_user(username, None)
            self._known_external.add(username)
        account = await self.store.user(username)
        return self.role_for(account) if account else "member"
