"""Bake every supported combination and check what the post-generation hook pruned and kept.

The first section bakes all combinations and checks each copy statically (files, TOML, ruff, syntax);
the second runs the baked projects' own test suites: once per backend, and the whole suite once.
"""

from __future__ import annotations

import ast
import itertools
import os
import re
import subprocess
import sys
import tokenize
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, TEMPLATE, Bake

LAYERS = ("inmemory", "redis", "rabbitmq", "nats", "postgresql")
BROKERS = LAYERS[1:]


def hook_constant(name: str) -> Any:
    """A literal constant of the post-generation hook (a Jinja template, so it cannot be imported)."""
    tree = ast.parse((ROOT / "hooks" / "post_gen_project.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value:
                return ast.literal_eval(node.value)
    raise LookupError(name)


JUNK: tuple[str, ...] = hook_constant("JUNK")

UNRENDERED = re.compile(
    r"\{\{\s*cookiecutter|(\{%-?|^\s*#%)\s*(if|elif|else|endif|for|endfor|set|raw)\b",
    re.MULTILINE,
)


def combinations() -> list[dict[str, str]]:
    combos = []
    for layer, celery, keep, workers in itertools.product(
        LAYERS, ("no", "yes"), ("yes", "no"), ("1", "3")
    ):
        if layer == "inmemory" and (celery == "yes" or workers != "1"):
            continue  # rejected by the pre-generation hook (tests/test_hooks.py)
        combos.append(
            {
                "channel_layer": layer,
                "use_celery": celery,
                "keep_all_backends": keep,
                "web_workers": workers,
            }
        )
    return combos


COMBOS = combinations()


def combo_id(combo: dict[str, str]) -> str:
    celery, keep = combo["use_celery"], combo["keep_all_backends"]
    return f"{combo['channel_layer']}-celery_{celery}-keep_{keep}-w{combo['web_workers']}"


BACKEND_PATTERNS: tuple[str, ...] = hook_constant("BACKEND_PATTERNS")


def pruned_patterns(combo: dict[str, str]) -> list[str]:
    """Template paths (relative to the project) the options remove."""
    patterns = []
    if combo["keep_all_backends"] == "no":
        for name in BROKERS:
            if name != combo["channel_layer"]:
                # a pattern naming a folder removes all below it
                patterns += [pattern.format(name=name) for pattern in BACKEND_PATTERNS]
                patterns += [f"{pattern.format(name=name)}/*" for pattern in BACKEND_PATTERNS]
    if combo["use_celery"] == "no":
        patterns += ["app/worker/*", "tests/celery/*", "*celery*"]
    return patterns


def files(root: Path) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and not is_junk(path.relative_to(root))
    }


def is_junk(path: Path) -> bool:
    return any(fnmatch(part, junk) for part in path.parts for junk in JUNK)


def is_text(path: Path) -> bool:
    return b"\0" not in path.read_bytes()[:8192]


@pytest.fixture(scope="module", params=COMBOS, ids=combo_id)
def baked(request: pytest.FixtureRequest, bake: Bake) -> tuple[dict[str, str], Path]:
    combo: dict[str, str] = request.param
    return combo, bake(**combo)


def test_files_pruned_and_kept(baked: tuple[dict[str, str], Path]) -> None:
    combo, project = baked
    patterns = pruned_patterns(combo)
    expected = {
        path for path in files(TEMPLATE) if not any(fnmatch(path, p) for p in patterns)
    }
    if (TEMPLATE / ".env.example").exists():
        expected.add(".env")
    assert files(project) == expected
    assert not [
        path for path in project.rglob("*") if is_junk(path.relative_to(project))
    ]


def test_backends(baked: tuple[dict[str, str], Path]) -> None:
    combo, project = baked
    present = {
        path.name for path in (project / "app/channels/backends").iterdir() if path.is_dir()
    } & set(LAYERS)
    vendored = {
        path.name for path in (TEMPLATE / "app/channels/backends").iterdir() if path.is_dir()
    } & set(LAYERS)
    if combo["keep_all_backends"] == "yes":
        assert present == vendored
    else:  # the in-memory backend always stays: it is the conformance suite's reference
        assert present == {"inmemory", combo["channel_layer"]} & vendored


def mentions_celery(path: Path) -> bool:
    """In Python, code (identifiers, imports) counts; prose in docstrings and comments is documentation."""
    if "celery" in path.name.lower():
        return True
    if path.suffix == ".py":
        with path.open("rb") as source:
            return any(
                tok.type == tokenize.NAME and "celery" in tok.string.lower()
                for tok in tokenize.tokenize(source.readline)
            )
    return is_text(path) and "celery" in path.read_text().lower()


def test_celery_only_when_chosen(baked: tuple[dict[str, str], Path]) -> None:
    combo, project = baked
    mentions = [
        path.relative_to(project).as_posix()
        for path in project.rglob("*")
        if path.is_file()
        and path.suffix != ".md"
        and "docs" not in path.relative_to(project).parts
        and mentions_celery(path)
    ]
    if combo["use_celery"] == "yes":
        assert {"app/worker/celery_app.py", "pyproject.toml", f"compose/{combo['channel_layer']}.yaml"} <= set(mentions)
    else:
        assert mentions == []


def test_rendered(baked: tuple[dict[str, str], Path]) -> None:
    combo, project = baked
    leftovers = [
        path.relative_to(project).as_posix()
        for path in project.rglob("*")
        if path.is_file()
        and "static" not in path.parts
        and is_text(path)
        and UNRENDERED.search(path.read_text())
    ]
    assert leftovers == []
    env = (project / ".env").read_text()
    assert f"FASTAPI_WEBSOCKETS_BACKEND={combo['channel_layer']}\n" in env
    assert f"WEB_CONCURRENCY={combo['web_workers']}\n" in env
    secret = re.search(r"^APP_SECRET_KEY=(.+)$", env, re.MULTILINE)
    assert secret and len(secret.group(1)) >= 32 and secret.group(1) != "change-me"  # one per bake


def test_copied_without_render(baked: tuple[dict[str, str], Path]) -> None:
    _, project = baked
    raw = [
        p for p in files(TEMPLATE) if p.startswith("app/static/") or p.endswith(".png")
    ]
    assert [
        p for p in raw if (project / p).read_bytes() != (TEMPLATE / p).read_bytes()
    ] == []


def test_pyproject(baked: tuple[dict[str, str], Path]) -> None:
    combo, project = baked
    data = tomllib.loads((project / "pyproject.toml").read_text())
    assert data["project"]["name"] == project.name
    extras = set(data["project"]["optional-dependencies"])
    layer = combo["channel_layer"]
    brokers = (
        set(BROKERS) if combo["keep_all_backends"] == "yes" else {layer} - {"inmemory"}
    )
    assert extras & {*BROKERS, "celery"} == brokers | (
        {"celery"} if combo["use_celery"] == "yes" else set()
    )
    assert "test" in extras


def test_ruff(baked: tuple[dict[str, str], Path]) -> None:
    _, project = baked
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        check=False,
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compiles(baked: tuple[dict[str, str], Path]) -> None:
    _, project = baked
    for path in project.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")


def run_suite(
    project: Path, *args: str, backends: str | None = None, timeout: float = 600
) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("TEST_BACKENDS", None)
    if backends:
        env["TEST_BACKENDS"] = backends
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    result = subprocess.run(
        command,
        check=False,
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(result.stdout[-4000:])  # the summary shows in the template run's -s/-rA output and on failure
    assert result.returncode == 0, (
        f"{' '.join(command)} in {project}:\n{result.stdout[-20000:]}\n{result.stderr[-3000:]}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("layer", LAYERS)
def test_backend_suite(layer: str, bake: Bake) -> None:
    """The conformance suite of a project pruned down to one backend (pruning left it whole)."""
    if not (TEMPLATE / "app/channels/backends" / layer / "layer.py").exists():
        pytest.fail(f"the template has no {layer} backend")
    project = bake(
        channel_layer=layer,
        keep_all_backends="no",
        web_workers="1" if layer == "inmemory" else "3",
    )
    run_suite(project, "tests/channels/test_conformance.py", "-x", "-q", backends=layer)


@pytest.mark.slow
@pytest.mark.parametrize("keep", ("no", "yes"))
def test_types(keep: str, bake: Bake) -> None:
    """mypy passes on what pruning leaves (one backend, no Celery) and on a bake that keeps everything."""
    project = bake(channel_layer="nats", use_celery="yes" if keep == "yes" else "no", keep_all_backends=keep)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(project / ".mypy_cache"), "app", "tests"],
        check=False,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_full_project_suite(bake: Bake) -> None:
    """The whole suite of a bake that keeps everything: all five backends, Celery, 3 web workers.

    Conformance, fault and multi-process tests of every backend, the multi-worker chat, Celery with
    a real worker, the deploy topology behind nginx, browser tests in Chromium, reliability, and
    scripts/load.py (the benchmarks' short mode is tests/test_bench.py). Test files run in parallel
    (pytest-xdist), each in one process.
    """
    project = bake(channel_layer="redis", use_celery="yes", web_workers="3", keep_all_backends="yes")
    # one rerun for timing-sensitive multi-process tests on a loaded 2-core machine; a rerun shows as R
    run_suite(project, "-q", "-rsR", "-n", "3", "--dist", "loadfile", "--reruns", "1", "--durations=20", timeout=2400)
