"""``python -m app migrate [revision]`` and ``python -m app create-admin <name>``: management commands only.

The server has one way to run per setting: ``uvicorn app.main:app --reload --ws websockets-sansio``
in development, ``gunicorn -c gunicorn.conf.py app.main:app`` (the Docker image) in production.
"""

import sys

if sys.argv[1:2] not in (["migrate"], ["create-admin"]):
    sys.exit("usage: python -m app migrate [revision] | create-admin <name>"
             " (serve with uvicorn in development, gunicorn in production)")

if sys.argv[1] == "migrate":
    from .db.cli import migrate_main

    migrate_main(sys.argv[2:])
else:
    from .accounts.cli import create_admin_main

    create_admin_main(sys.argv[2:])
