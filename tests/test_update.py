"""A project made with cruft from the previous release takes this commit with ``cruft update``, cleanly.

Forks of generated projects update through cruft's three-way merge of two renders of the template; a
rename, a pruned backend or a random value in a render can leave rejects or conflicts behind. The
template is cloned at HEAD (committed work only, whatever the developer's working tree holds).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import ROOT

SLUG_DIR = "{{cookiecutter.project_slug}}"
EDIT = "# A fork's own line: cruft update must keep it.\n"
CONTEXTS = [
    {},  # the previous release's defaults
    {"channel_layer": "redis", "use_celery": "yes", "web_workers": "2", "keep_all_backends": "no"},
]
QUICK_TESTS = ("tests/channels/test_names.py", "tests/channels/test_serialization.py")
NOT_COMPARED = {".git", ".cruft.json", ".env", "__pycache__", ".ruff_cache"}


def run(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def git(*args: str, cwd: Path) -> str:
    return run("git", *args, cwd=cwd).stdout.strip()


def cruft(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "cruft", *args, cwd=cwd, check=check)


def previous_release() -> tuple[str, str | None]:
    """The newest released version in CHANGELOG.md and the commit written under its heading."""
    text = (ROOT / "CHANGELOG.md").read_text()
    match = re.search(r"^## \[(\d+\.\d+\.\d+)\][^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "CHANGELOG.md has no released version (## [X.Y.Z] - date)"
    commit = re.search(r"[Cc]ommit `([0-9a-f]{40})`", match[2])
    return match[1], commit[1] if commit else None


def resolve_previous(template: Path) -> str:
    """The previous release's commit: its tag if this clone has it, else the commit CHANGELOG.md records."""
    version, recorded = previous_release()
    tagged = run("git", "rev-parse", "-q", "--verify", f"refs/tags/v{version}^{{commit}}", cwd=template, check=False)
    if tagged.returncode == 0:
        assert recorded in (None, tagged.stdout.strip()), f"tag v{version} and CHANGELOG.md disagree"
        return tagged.stdout.strip()
    assert recorded, f"no tag v{version} here and CHANGELOG.md records no commit for {version}"
    exists = run("git", "cat-file", "-e", f"{recorded}^{{commit}}", cwd=template, check=False)
    assert exists.returncode == 0, f"commit {recorded} of {version} is not in this clone (a shallow clone?)"
    return recorded


@pytest.fixture
def isolated(tmp_path: Path, cookiecutter_config: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user git or cookiecutter configuration leaks in; commits have an author."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Fork Maintainer")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "fork@example.com")
    monkeypatch.setenv("COOKIECUTTER_CONFIG", str(cookiecutter_config))
    return tmp_path


def create(template: Path, commit: str, context: dict[str, str], out: Path) -> Path:
    out.mkdir()
    cruft(
        "create",
        template,
        "--checkout",
        commit,
        "--no-input",
        "--output-dir",
        out,
        "--extra-context",
        json.dumps(context),
        cwd=out,
    )
    (project,) = out.iterdir()
    return project


def user_context(project: Path) -> dict[str, str]:
    context = json.loads((project / ".cruft.json").read_text())["context"]["cookiecutter"]
    return {key: value for key, value in context.items() if not key.startswith("_")}


def files(project: Path) -> dict[str, tuple[bytes, bool]]:
    """Each file's content and executable bit, keyed by its path in the project."""
    found = {}
    for path in project.rglob("*"):
        relative = path.relative_to(project)
        if path.is_file() and not NOT_COMPARED & set(relative.parts):
            found[relative.as_posix()] = (path.read_bytes(), os.access(path, os.X_OK))
    return found


def local_edit(project: Path, template: Path, previous: str, head: str) -> str:
    """Append a line to an app module the template left alone between the two releases."""
    changed = set(git("diff", "--name-only", previous, head, "--", SLUG_DIR, cwd=template).splitlines())
    candidates = sorted(
        path
        for path in git("ls-files", "app", cwd=project).splitlines()
        if path.endswith(".py") and f"{SLUG_DIR}/{path}" not in changed
    )
    assert candidates, "every app module changed since the previous release: nothing to edit safely"
    with (project / candidates[0]).open("a") as module:
        module.write(EDIT)
    return candidates[0]


def renamed_edit(project: Path, template: Path, previous: str, head: str) -> str | None:
    """Append a line to a module the template moved (and whose end it kept); its new path, if any."""
    status = git("diff", "--name-status", "-M", previous, head, "--", SLUG_DIR, cwd=template)
    for line in status.splitlines():
        kind, *paths = line.split("\t")
        if not kind.startswith("R"):
            continue
        before, after = paths
        old, new = before.removeprefix(f"{SLUG_DIR}/"), after.removeprefix(f"{SLUG_DIR}/")
        if not (old.endswith(".py") and (project / old).is_file()):
            continue
        old_end = git("show", f"{previous}:{before}", cwd=template).splitlines()[-3:]
        if old_end == git("show", f"{head}:{after}", cwd=template).splitlines()[-3:]:
            with (project / old).open("a") as module:
                module.write(EDIT)
            return new
    return None


@pytest.mark.slow
@pytest.mark.parametrize("context", CONTEXTS, ids=["defaults", "redis-celery-pruned"])
def test_cruft_update_from_the_previous_release(context: dict[str, str], isolated: Path) -> None:
    template = isolated / "template"
    run("git", "clone", "--quiet", ROOT, template, cwd=isolated)
    head = git("rev-parse", "HEAD", cwd=template)
    previous = resolve_previous(template)
    assert previous != head, "HEAD is the previous release: nothing to update"

    project = create(template, previous, context, isolated / "fork")
    cruft_file = project / ".cruft.json"
    cruft_skip = tomllib.loads((project / "pyproject.toml").read_text()).get("tool", {}).get("cruft", {})
    if ".env" not in cruft_skip.get("skip", []):  # made before 0.2.0: the README's one-time step
        state = json.loads(cruft_file.read_text())
        cruft_file.write_text(json.dumps({**state, "skip": [".env"]}, indent=2) + "\n")
    git("init", "--quiet", cwd=project)
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "-m", "Generated from the template", cwd=project)
    edited = [local_edit(project, template, previous, head)]
    moved = renamed_edit(project, template, previous, head)  # 0.1.0: the backends became packages
    edited += [moved] if moved else []
    git("commit", "--quiet", "-am", "A local change", cwd=project)

    assert cruft("check", cwd=project, check=False).returncode != 0, "cruft check missed the update"
    update = cruft("update", "--skip-apply-ask", "--checkout", head, cwd=project)
    assert "Failed to apply" not in update.stdout + update.stderr, update.stdout + update.stderr

    assert not list(project.rglob("*.rej")), update.stdout
    assert git("diff", "--name-only", "--diff-filter=U", cwd=project) == ""
    for relative, (content, _) in files(project).items():
        assert not re.search(rb"^(<{7}|>{7}) ", content, re.M), f"conflict markers in {relative}"
    assert json.loads(cruft_file.read_text())["commit"] == head
    assert cruft("check", cwd=project, check=False).returncode == 0

    # The update lands exactly where a fresh project at HEAD would, plus the fork's own lines.
    fresh = create(template, head, user_context(project), isolated / "fresh")
    expected = files(fresh)
    for path in edited:
        content, executable = expected[path]
        expected[path] = (content + EDIT.encode(), executable)
    updated = files(project)
    assert sorted(updated) == sorted(expected)
    assert [path for path in expected if updated[path] != expected[path]] == []

    run(sys.executable, "-m", "ruff", "check", "--no-cache", ".", cwd=project)
    run(sys.executable, "-m", "compileall", "-q", ".", cwd=project)
    quick = [test for test in QUICK_TESTS if (project / test).is_file()]
    assert quick, "none of the quick tests exists in the updated project"
    run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *quick, cwd=project)


def test_previous_release_without_its_tag(tmp_path: Path) -> None:
    """A clone without tags (CI's may lack them) finds the previous release by the commit CHANGELOG.md records."""
    template = tmp_path / "template"
    run("git", "clone", "--quiet", "--no-tags", ROOT, template, cwd=tmp_path)
    assert git("tag", "--list", cwd=template) == ""
    version, recorded = previous_release()
    assert recorded, f"CHANGELOG.md records no commit for {version}"
    assert resolve_previous(template) == recorded
