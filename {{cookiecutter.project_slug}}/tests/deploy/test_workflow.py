"""The generated project's GitHub Actions workflow and pre-commit config are valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def test_workflow_matches_the_github_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_stages() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert jobs["test"]["needs"] == "lint"
    steps = " ".join(str(step.get("run", "")) for step in jobs["lint"]["steps"])
    assert "ruff check" in steps and "mypy" in steps
    runs = [str(step.get("run", "")) for step in jobs["test"]["steps"]]
    assert any("-m e2e" in run for run in runs) and any('-m "not e2e"' in run for run in runs)


def test_pre_commit_runs_ruff_and_mypy() -> None:
    hooks = {hook["id"] for repo in yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
             for hook in repo["hooks"]}
    assert {"ruff", "mypy"} <= hooks
