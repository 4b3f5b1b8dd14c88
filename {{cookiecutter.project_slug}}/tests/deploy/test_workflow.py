"""The generated project's GitHub Actions workflow, Dependabot and pre-commit configs are valid and do their jobs.

CI runs third-party code with the repository's token, so every action is pinned to a commit (a tag can move);
the pins are only safe if something bumps them, hence Dependabot; the pinned requirements are audited.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
DEPENDABOT = ROOT / ".github" / "dependabot.yml"
PRE_COMMIT = ROOT / ".pre-commit-config.yaml"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
DEPENDABOT_COMPOSE = re.compile(r"(docker-)?compose(-\w+)?(\.[\w-]+)?\.ya?ml", re.I)
SKIPPED_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "test-results"}


def check_jsonschema(schema: str, path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def test_workflows_match_the_github_schema() -> None:
    assert WORKFLOW in WORKFLOWS
    for workflow in WORKFLOWS:
        check_jsonschema("vendor.github-workflows", workflow)


def test_workflow_stages() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert jobs["test"]["needs"] == "lint"
    runs = " ".join(str(step.get("run", "")) for step in steps(jobs["lint"]))
    assert "ruff check" in runs and "mypy" in runs
    test_runs = [str(step.get("run", "")) for step in steps(jobs["test"])]
    assert any("-m e2e" in run for run in test_runs) and any('-m "not e2e"' in run for run in test_runs)


def test_every_action_is_pinned_by_commit_with_its_tag() -> None:
    for workflow in WORKFLOWS:
        jobs = yaml.safe_load(workflow.read_text())["jobs"]
        uses = [step["uses"] for job in jobs.values() for step in steps(job) if "uses" in step]
        assert uses, workflow
        for action in uses:
            assert PINNED.match(action), f"{workflow.name}: {action} is not pinned to a 40-hex commit"
            line = next(line for line in workflow.read_text().splitlines() if action in line)
            assert re.search(r"#\s*v\d", line), f"{workflow.name}: {action} has no '# vX.Y.Z' tag comment"


def test_tests_run_on_every_supported_python() -> None:
    """The matrix, the classifiers and requires-python name the same versions, 3.14 included."""
    test = yaml.safe_load(WORKFLOW.read_text())["jobs"]["test"]
    matrix = [str(version) for version in test["strategy"]["matrix"]["python-version"]]
    assert {"3.11", "3.12", "3.13", "3.14"} <= set(matrix)
    setup = next(step for step in steps(test) if step.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "${{ matrix.python-version }}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    classified = {c.rsplit(" :: ", 1)[1] for c in project["classifiers"] if re.fullmatch(r".*Python :: 3\.\d+", c)}
    assert classified == set(matrix)
    assert project["requires-python"] == f">={min(matrix, key=lambda v: tuple(map(int, v.split('.'))))}"
    image_python = re.search(r"^ARG PYTHON_VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert image_python and image_python[1] in matrix  # the image's Python is tested


def test_pip_audit_checks_the_pinned_requirements() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    runs = [str(step.get("run", "")) for job in jobs.values() for step in steps(job)]
    audit = [run for run in runs if run.lstrip().startswith("for ") and "pip-audit" in run]
    assert audit, "no step runs pip-audit"
    assert "requirements/*.txt" in audit[0] and "--require-hashes" in audit[0]
    assert any((ROOT / "requirements").glob("*.txt"))


def test_dependabot_covers_pip_docker_and_actions() -> None:
    check_jsonschema("vendor.dependabot", DEPENDABOT)
    updates = {u["package-ecosystem"]: u["directory"] for u in yaml.safe_load(DEPENDABOT.read_text())["updates"]}
    assert {"pip", "docker", "docker-compose", "github-actions", "pre-commit"} <= set(updates)
    assert (ROOT / updates["docker"].lstrip("/") / "Dockerfile").is_file()
    compose = (ROOT / updates["docker-compose"].lstrip("/")).iterdir()
    assert any(DEPENDABOT_COMPOSE.search(path.name) for path in compose)  # Dependabot's own filename rule
    assert (ROOT / updates["pip"].lstrip("/") / "pyproject.toml").is_file()


def pre_commit_hooks() -> dict[str, dict[str, Any]]:
    repos = yaml.safe_load(PRE_COMMIT.read_text())["repos"]
    return {hook["id"]: hook for repo in repos for hook in repo["hooks"]}


def test_pre_commit_runs_ruff_mypy_and_a_secret_scanner() -> None:
    assert {"ruff", "mypy", "detect-secrets"} <= set(pre_commit_hooks())


def committed_files() -> list[str]:
    """The project's files as a commit would hold them: .env (this checkout's secret) and caches left out."""
    files = []
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if path.is_file() and not SKIPPED_DIRS & set(relative.parts) and relative.name != ".env" and \
                not any(part.endswith(".egg-info") for part in relative.parts):
            files.append(relative.as_posix())
    return files


def scan(files: list[str]) -> subprocess.CompletedProcess[str]:
    args = pre_commit_hooks()["detect-secrets"].get("args", [])
    return subprocess.run(
        [sys.executable, "-m", "detect_secrets.pre_commit_hook", *args, *files],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_secret_scanner_allowlist_passes_the_project_and_still_catches_a_secret(tmp_path: Path) -> None:
    result = scan(committed_files())
    assert result.returncode == 0, result.stdout + result.stderr
    leak = tmp_path / "leak.py"
    leak.write_text('DATABASE_URL = "postgresql://chat:Zx8vQ2mL9pR4tK7w@db.internal:5432/chat"\n')
    caught = scan([str(leak)])
    assert caught.returncode == 1 and "leak.py" in caught.stdout, caught.stdout + caught.stderr
