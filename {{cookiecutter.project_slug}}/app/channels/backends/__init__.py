"""Backends: each broker a small class behind :class:`app.channels.base.BaseChannelLayer`."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..exceptions import BackendNotInstalled


def import_client(module: str, extra: str) -> ModuleType:
    """Import an optional broker client, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendNotInstalled(
            f"the {extra} channel layer needs {module!r}: install the extra with pip install '.[{extra}]'"
        ) from exc
