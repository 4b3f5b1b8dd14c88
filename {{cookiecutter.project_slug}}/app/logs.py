"""Logging: readable lines in development, one JSON object per line in production."""

from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

from .settings import Settings

_TOKEN_IN_URL = re.compile(r"([?&](?:access_)?token=)[^&\s\"']+")


class RedactTokens(logging.Filter):
    """A token a client put in a URL (``/ws?token=…``, refused) never reaches a log line: uvicorn logs paths
    with their query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN_IN_URL.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _TOKEN_IN_URL.sub(r"\1[redacted]", record.msg)
        return True


def quiet_uvicorn(settings: Settings) -> None:
    """Once a worker has started: uvicorn's error logger says nothing below WARNING (unless at DEBUG).

    It logs every WebSocket handshake at INFO (``"WebSocket /ws" [accepted]``): an access log line,
    one per socket, thousands a second in a reconnect storm, and about 5% of a worker's CPU spent
    in ``logging`` while it lasts (even a filter runs after the record is made). Startup lines are
    logged before this is called.
    """
    if settings.log_level.upper() != "DEBUG":
        logger = logging.getLogger("uvicorn.error")
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))


def configure_logging(settings: Settings) -> None:
    for name in ("uvicorn.error", "uvicorn.access"):  # they log on their own loggers, to gunicorn's handlers
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactTokens())
    if settings.json_logs:
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
