"""``python -m app migrate [revision]``: management commands only.

The server has one way to run per setting: ``uvicorn app.main:app --reload --ws websockets-sansio``
in development, ``gunicorn -c gunicorn.conf.py app.main:app`` (the Docker image) in production.
"""

import sys

if sys.argv[1:2] != ["migrate"]:
    sys.exit("usage: python -m app migrate [revision] (serve with uvicorn in development, gunicorn in production)")

from .db.cli import migrate_main

migrate_main(sys.argv[2:])
