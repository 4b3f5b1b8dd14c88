"""Accounts on a real database (SQLite and PostgreSQL): names, passwords, throttling, sessions, roles, rooms."""

from __future__ import annotations

import pytest

from app.accounts.accounts import Accounts, BadCredentials, Throttled
from app.accounts.passwords import Passwords
from app.accounts.rooms import Forbidden, RoomAccess
from app.accounts.store import NameTaken
from app.accounts.tokens import InvalidToken, decode_token, issue_token


async def test_names_are_unique_case_insensitively_and_reserved_ones_refused(accounts: Accounts) -> None:
    await accounts.signup("alice", "correct horse")
    with pytest.raises(NameTaken):
        await accounts.signup("ALICE", "another password")
    for reserved in ("system", "Admin", "root", "server"):
        with pytest.raises(ValueError, match="reserved"):
            await accounts.signup(reserved, "correct horse")


async def test_impersonation_fails_with_one_answer_for_wrong_password_and_unknown_user(accounts: Accounts) -> None:
    await accounts.signup("alice", "correct horse")
    with pytest.raises(BadCredentials) as wrong:
        await accounts.login("alice", "guess", "10.0.0.1")
    with pytest.raises(BadCredentials) as unknown:
        await accounts.login("nobody", "guess", "10.0.0.1")
    assert str(wrong.value) == str(unknown.value)
    identity = await accounts.verify(await accounts.login("Alice", "correct horse", "10.0.0.1"))
    assert identity.user == "alice"  # the stored spelling, whatever case the login used


async def test_failed_logins_are_throttled_per_name_and_per_address(accounts: Accounts) -> None:
    await accounts.signup("bob", "correct horse")
    for _ in range(3):  # login_attempts_per_username=3
        with pytest.raises(BadCredentials):
            await accounts.login("bob", "guess", "10.0.0.2")
    with pytest.raises(Throttled) as throttled:
        await accounts.login("bob", "correct horse", "10.0.0.3")  # even the right password, from elsewhere
    assert throttled.value.retry_after > 0
    for name in ("n1", "n2"):  # login_attempts_per_address=5: the address has 3 failures already
        with pytest.raises(BadCredentials):
            await accounts.login(name, "guess", "10.0.0.2")
    with pytest.raises(Throttled):
        await accounts.login("n3", "guess", "10.0.0.2")


async def test_a_successful_login_clears_the_names_failures(accounts: Accounts) -> None:
    await accounts.signup("cleo", "correct horse")
    for _ in range(2):
        with pytest.raises(BadCredentials):
            await accounts.login("cleo", "guess", "10.0.1.1")
    await accounts.login("cleo", "correct horse", "10.0.1.1")
    for _ in range(2):  # counting starts over
        with pytest.raises(BadCredentials):
            await accounts.login("cleo", "guess", "10.0.1.2")
    await accounts.login("cleo", "correct horse", "10.0.1.3")


async def test_logout_ends_the_session_and_only_it(accounts: Accounts) -> None:
    first = await accounts.signup("dora", "correct horse")
    second = await accounts.login("dora", "correct horse", "10.0.2.1")
    await accounts.logout(await accounts.verify(first))
    with pytest.raises(InvalidToken, match="session ended"):
        await accounts.verify(first)
    assert (await accounts.verify(second)).user == "dora"


async def test_roles_from_admin_usernames_at_signup_and_login(accounts: Accounts) -> None:
    assert (await accounts.verify(await accounts.signup("root-ops", "correct horse"))).role == "admin"
    assert (await accounts.verify(await accounts.signup("member1", "correct horse"))).role == "member"
    await accounts.set_password("boss", "correct horse")  # created as a member; APP_ADMIN_USERNAMES has "Boss"
    assert (await accounts.verify(await accounts.login("boss", "correct horse", "10.0.3.1"))).is_admin


async def test_create_admin_sets_the_role_and_the_password(accounts: Accounts) -> None:
    await accounts.signup("erin", "first password")
    await accounts.set_password("erin", "second password", role="admin")
    assert (await accounts.verify(await accounts.login("erin", "second password", "10.0.4.1"))).is_admin
    with pytest.raises(BadCredentials):
        await accounts.login("erin", "first password", "10.0.4.1")


async def test_login_rehashes_a_hash_of_old_parameters(accounts: Accounts, database_url: str) -> None:
    await accounts.signup("fay", "correct horse")
    before = (await accounts.store.user("fay")).password_hash  # type: ignore[union-attr]
    stronger = Accounts(accounts.settings, accounts.store.engine, Passwords(time_cost=2, memory_cost=8192))
    await stronger.login("fay", "correct horse", "10.0.5.1")
    after = (await accounts.store.user("fay")).password_hash  # type: ignore[union-attr]
    assert before != after and after is not None and "t=2" in after


async def test_a_token_naming_another_or_an_unknown_user_is_refused(accounts: Accounts) -> None:
    claims = decode_token(accounts.settings, await accounts.signup("gus", "correct horse"))
    await accounts.signup("hank", "correct horse")
    for subject in ("hank", "nobody"):  # signed right, but gus's session is not theirs
        with pytest.raises(InvalidToken, match="session ended"):
            await accounts.verify(issue_token(accounts.settings, subject, claims["sid"]))


class NoPresence:
    """Nobody is in any room on a socket (RoomAccess asks presence only for public-room posts)."""

    def members(self, room: str) -> set[str]:
        return {"ivy"} if room == "public" else set()


async def test_private_rooms_admit_the_owner_and_invitees_only(accounts: Accounts) -> None:
    for name in ("hal", "ivy", "jon"):
        await accounts.signup(name, "correct horse")
    access = RoomAccess(accounts.store, NoPresence())  # type: ignore[arg-type]
    await access.create_private("den", "hal")
    with pytest.raises(NameTaken):
        await access.create_private("den", "ivy")
    with pytest.raises(Forbidden, match="in use"):
        await access.create_private("public", "ivy")
    await access.check_enter("den", "hal")
    with pytest.raises(Forbidden, match="private"):
        await access.check_enter("den", "ivy")
    with pytest.raises(Forbidden, match="owner"):
        await access.invite("den", "ivy", "ivy")
    with pytest.raises(LookupError):
        await access.invite("den", "hal", "nobody")
    assert await access.invite("den", "hal", "IVY") == "ivy"
    await access.check_enter("den", "ivy")
    await access.check_post("den", "ivy")
    with pytest.raises(Forbidden):
        await access.check_post("den", "jon")
    await access.check_post("public", "ivy")  # in the public room on a socket
    with pytest.raises(Forbidden, match="join room"):
        await access.check_post("public", "jon")
    assert await access.visible({"den": 2, "public": 1}, "jon") == {"public": 1}
    assert await access.visible({"den": 2, "public": 1}, "ivy") == {"den": 2, "public": 1}
