"""Many test users at once: accounts and sessions written into a running service's own store.

A sign-up hashes its password with argon2id (about 0.2 s of CPU): 300 of them took a minute of a
soak that measures WebSockets, not sign-ups (tests/accounts covers those). These accounts have no
password; each token is a real session the service checks as it checks any other.
"""

from __future__ import annotations

import subprocess
import sys

from ..live_server import ROOT, LiveServer

SEED = r"""
import asyncio, sys
from app.accounts.store import AccountStore, NameTaken
from app.accounts.tokens import issue_token
from app.db.engine import make_engine
from app.settings import get_settings

async def main(names):
    settings = get_settings()
    engine = make_engine(settings.database_url.get_secret_value())
    store = AccountStore(engine)
    for name in names:
        try:
            await store.create_user(name, None)
        except NameTaken:  # a rerun on the same database: the account is there, a new session is enough
            pass
        print(issue_token(settings, name, await store.create_session(name, settings.token_ttl_seconds)))
    await engine.dispose()

asyncio.run(main(sys.stdin.read().split()))
"""


def seeded_tokens(server: LiveServer, names: list[str]) -> list[str]:
    """A token per name (in order), from the settings and database of ``server``'s environment."""
    done = subprocess.run([sys.executable, "-c", SEED], input="\n".join(names), capture_output=True, text=True,
                          cwd=ROOT, env=server.env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    tokens = done.stdout.split()
    assert len(tokens) == len(names), done.stdout[-1000:]
    return tokens
