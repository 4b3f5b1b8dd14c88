from __future__ import annotations

from app.accounts.passwords import Passwords

from .conftest import FAST


async def test_hash_is_argon2id_and_verifies_only_the_password() -> None:
    passwords = Passwords(**FAST)
    stored = await passwords.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert await passwords.verify("correct horse", stored) == (True, None)
    assert (await passwords.verify("wrong horse", stored))[0] is False


async def test_changed_parameters_ask_for_a_rehash() -> None:
    old = await Passwords(time_cost=1, memory_cost=8192).hash("correct horse")
    ok, new_hash = await Passwords(time_cost=2, memory_cost=8192).verify("correct horse", old)
    assert ok and new_hash is not None and new_hash != old and "t=2" in new_hash


async def test_an_unknown_user_is_refused_after_verifying_a_dummy_hash() -> None:
    assert await Passwords(**FAST).verify("anything", None) == (False, None)
