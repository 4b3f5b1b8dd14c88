"""The pre-generation hook refuses what cannot run, with one line naming the option, and writes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, Bake

REJECTED = [
    ({"project_name": "Chat 2.0"}, "project_slug"),
    ({"project_slug": "1chat"}, "project_slug"),
    ({"project_slug": "class"}, "project_slug"),
    ({"project_name": 'O\'Brien "Chat"'}, "project_slug"),
    ({"description": 'a "quoted" word'}, "description"),
    ({"author_name": "back\\slash"}, "author_name"),
    ({"web_workers": "0", "channel_layer": "redis"}, "web_workers"),
    ({"web_workers": "-2", "channel_layer": "redis"}, "web_workers"),
    ({"web_workers": "two", "channel_layer": "redis"}, "web_workers"),
    ({"web_workers": "1.5", "channel_layer": "redis"}, "web_workers"),
    ({"web_workers": "3"}, "web_workers"),  # inmemory is the default layer
    (
        {"web_workers": "2", "channel_layer": "inmemory", "keep_all_backends": "no"},
        "web_workers",
    ),
    ({"use_celery": "yes"}, "use_celery"),
    ({"python_version": "3.10", "channel_layer": "nats"}, "python_version"),
    ({"python_version": "3.14"}, "python_version"),
]


def run_cli(
    output: Path, env: dict[str, str], **context: str
) -> subprocess.CompletedProcess[str]:
    answers = [f"{key}={value}" for key, value in context.items()]
    command = [
        sys.executable,
        "-m",
        "cookiecutter",
        str(ROOT),
        "--no-input",
        "-o",
        str(output),
        *answers,
    ]
    return subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    ("context", "option"),
    REJECTED,
    ids=[f"{o}-{'-'.join(c.values())}" for c, o in REJECTED],
)
def test_rejected(
    context: dict[str, str], option: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    result = run_cli(tmp_path, cli_env, **context)
    assert result.returncode != 0
    # the hook's one line; cookiecutter may add its own "Stopping generation" report after it
    hook, *rest = result.stderr.splitlines()
    assert hook.startswith(f"ERROR: {option}") or f" {option}=" in hook, hook
    assert not [
        line
        for line in rest
        if line.startswith("ERROR:") and "pre_gen_project hook" not in line
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "context",
    [
        {"python_version": "3.13", "project_name": "My-Chat Room"},
        {
            "channel_layer": "redis",
            "use_celery": "yes",
            "web_workers": "8",
            "python_version": "3.12",
        },
        {"description": "It's a chat: 100% {realtime}", "author_name": "Zoë O'Brien"},
    ],
)
def test_accepted(context: dict[str, str], bake: Bake) -> None:
    project = bake(**context)
    assert (project / "pyproject.toml").is_file()
    if "project_name" in context:
        assert project.name == "my_chat_room"
