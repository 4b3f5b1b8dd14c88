"""``python -m app create-admin <name>``: create an admin account (or make one admin), the password from stdin.

On a terminal the password is prompted twice (not echoed); piped, the first line of stdin is it, so a
deploy step can run ``printf '%s\\n' "$ADMIN_PASSWORD" | python -m app create-admin ops``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys

from ..chat.protocol import NAME_PATTERN
from ..db.engine import make_engine
from ..db.migrate import migrate
from ..settings import get_settings
from .accounts import RESERVED_NAMES, Accounts


def read_password(minimum: int) -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            sys.exit("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < minimum:
        sys.exit(f"the password needs at least {minimum} characters")
    return password


async def create_admin(username: str, password: str) -> None:
    settings = get_settings()
    url = settings.database_url.get_secret_value()
    await migrate(url)
    engine = make_engine(url, pool_size=1)
    try:
        await Accounts(settings, engine).set_password(username, password, role="admin")
    finally:
        await engine.dispose()


def create_admin_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m app create-admin", description=__doc__.splitlines()[0])
    parser.add_argument("username")
    args = parser.parse_args(argv)
    if not re.fullmatch(NAME_PATTERN, args.username) or args.username.lower() in RESERVED_NAMES:
        sys.exit(f"{args.username!r}: use 1-32 letters, digits, . _ - (and not a reserved name)")
    if get_settings().auth_mode != "local":
        sys.exit("APP_AUTH_MODE=oidc: admins come from APP_ADMIN_USERNAMES")
    asyncio.run(create_admin(args.username, read_password(get_settings().password_min_length)))
    print(f"{args.username} is an admin")
