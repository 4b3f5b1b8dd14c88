"""``python -m app migrate [revision]``: bring the database to the models' schema by hand.

Workers also migrate at startup (app/db/migrate.py); this is for a deploy step that migrates first
(downgrades: ``alembic`` with this env.py, see docs/database.md).
"""

from __future__ import annotations

import argparse
import asyncio

from ..settings import get_settings
from .migrate import migrate


def migrate_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m app migrate", description="Apply the Alembic migrations.")
    parser.add_argument("revision", nargs="?", default="head", help="revision to upgrade to (default: head)")
    args = parser.parse_args(argv)
    applied = asyncio.run(migrate(get_settings().database_url.get_secret_value(), args.revision))
    print(f"migrated to {', '.join(applied)}" if applied else "already at the requested revision")
