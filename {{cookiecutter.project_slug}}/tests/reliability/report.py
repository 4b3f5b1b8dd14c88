"""Measured figures: printed (run pytest with -s to see them) and appended to ``$RELIABILITY_REPORT``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def report(tag: str, row: dict[str, Any]) -> None:
    print(tag, json.dumps(row))
    path = os.environ.get("RELIABILITY_REPORT")
    if path:
        with Path(path).open("a") as out:
            out.write(json.dumps({"kind": tag, **row}) + "\n")
