"""Error reporting with sentry-sdk, on when ``SENTRY_DSN`` is set (``SENTRY_ENVIRONMENT`` and
``SENTRY_RELEASE`` are read by the SDK itself).

Errors and ``ERROR`` log records of the web service (and of job workers, which add their own
integration) become events. What users
typed stays out of them by default: no PII, no request bodies, no local variables, and breadcrumbs
and log messages keep their text only when ``APP_SENTRY_SEND_USER_TEXT=true`` (the service never
logs message text, but a handler's exception message might carry some).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

_configured = False
#: Event fields that can hold what a user typed, dropped before an event leaves the process.
_USER_TEXT_FIELDS = ("request", "extra", "user")


def wanted() -> bool:
    return bool(os.environ.get("SENTRY_DSN", "").strip())


def configure(*, integrations: Sequence[Any] = ()) -> bool:
    """Start the SDK once per process, with ``integrations`` beside the web ones; whether it is on."""
    global _configured
    dsn = os.environ.get("SENTRY_DSN", "").strip()
    if _configured or not dsn:
        return _configured
    try:
        import sentry_sdk
        from sentry_sdk.integrations.fastapi import FastApiIntegration
        from sentry_sdk.integrations.logging import LoggingIntegration
        from sentry_sdk.integrations.starlette import StarletteIntegration
    except ImportError as exc:
        raise RuntimeError("SENTRY_DSN is set: install the telemetry extra (pip install '.[telemetry]')") from exc
    keep_text = os.environ.get("APP_SENTRY_SEND_USER_TEXT", "").strip().lower() == "true"
    sentry_sdk.init(
        dsn=dsn, integrations=[StarletteIntegration(), FastApiIntegration(), LoggingIntegration(), *integrations],
        send_default_pii=False, include_local_variables=False,
        max_request_body_size="never", traces_sample_rate=0.0,
        # the SDK types events as TypedDicts; these hooks treat them as the plain dicts they are
        before_send=None if keep_text else cast(Any, _without_user_text),
        before_breadcrumb=None if keep_text else cast(Any, _breadcrumb_without_text),
    )
    _configured = True
    return True


def _without_user_text(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    for field in _USER_TEXT_FIELDS:
        event.pop(field, None)
    for exception in (event.get("exception") or {}).get("values", []):
        exception["value"] = "<message withheld>"  # the type and the stack trace stay
    logentry = event.get("logentry")
    if isinstance(logentry, dict) and logentry.get("params"):
        logentry["params"] = ["<withheld>"] * len(logentry["params"])
        logentry.pop("formatted", None)
    return event


def _breadcrumb_without_text(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    crumb.pop("data", None)
    return crumb


def flush() -> None:
    if _configured:
        import sentry_sdk

        sentry_sdk.flush(timeout=2)
