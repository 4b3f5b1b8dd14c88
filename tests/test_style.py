"""The template's own code (hooks, these tests) is linted and typed like the project it generates."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT

TOOLS = {"ruff": ["ruff", "check", "--no-cache", "."], "mypy": ["mypy", "--no-incremental"]}


@pytest.mark.parametrize("tool", TOOLS.values(), ids=TOOLS.keys())
def test_clean(tool: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", *tool], check=False, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
