"""``python -m app create-admin``, run as a deploy step would: the password piped on stdin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.accounts.accounts import Accounts
from app.db.engine import make_engine

from ..live_server import ROOT
from .conftest import make_settings


def create_admin(url: str, name: str, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APP_DATABASE_URL": url, "APP_ENVIRONMENT": "test"}
    return subprocess.run([sys.executable, "-m", "app", "create-admin", name], input=stdin, text=True,
                          capture_output=True, cwd=ROOT, env=env, timeout=120)


async def test_create_admin_makes_an_admin_who_can_log_in(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    done = create_admin(url, "ops", "a long admin password\n")
    assert done.returncode == 0 and "ops is an admin" in done.stdout, done.stderr
    engine = make_engine(url)
    try:
        accounts = Accounts(make_settings(), engine)
        identity = await accounts.verify(await accounts.login("ops", "a long admin password", "127.0.0.1"))
        assert identity.is_admin
    finally:
        await engine.dispose()


def test_create_admin_refuses_short_passwords_and_reserved_names(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    short = create_admin(url, "ops", "short\n")
    assert short.returncode != 0 and "at least 8" in short.stderr
    reserved = create_admin(url, "root", "a long admin password\n")
    assert reserved.returncode != 0 and "reserved" in reserved.stderr
