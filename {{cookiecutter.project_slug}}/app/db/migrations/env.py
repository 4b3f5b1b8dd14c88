"""Alembic's environment: runs on the connection app.db.migrate hands over (``attributes["connection"]``).

Without one (``alembic`` called directly), it opens the app's own async engine on APP_DATABASE_URL.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from app.db.models import metadata


def run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine() -> None:
    from app.db.engine import make_engine
    from app.settings import get_settings

    engine = make_engine(get_settings().database_url.get_secret_value(), pool_size=1)
    async with engine.connect() as connection:
        await connection.run_sync(run_on)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run python -m app migrate")
given = context.config.attributes.get("connection")
if given is not None:
    run_on(given)
else:
    asyncio.run(run_with_own_engine())
