"""The pre-generation hook refuses what cannot run, with one line naming the option, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

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
    ({"python_version": "3.15"}, "python_version"),
    ({"python_version": "3"}, "python_version"),
]


@pytest.mark.parametrize(
    ("context", "option"),
    REJECTED,
    ids=[f"{o}-{'-'.join(c.values())}" for c, o in REJECTED],
)
def test_rejected(
    context: dict[str, str],
    option: str,
    tmp_path: Path,
    cookiecutter_config: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(FailedHookException):
        cookiecutter(
            str(ROOT),
            no_input=True,
            extra_context=context,
            output_dir=str(tmp_path),
            config_file=str(cookiecutter_config),
        )
    (line,) = (
        capfd.readouterr().err.splitlines()
    )  # the hook runs as a child writing to fd 2
    assert line.startswith(f"ERROR: {option}") or f" {option}=" in line, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "context",
    [
        {"python_version": "3.13", "project_name": "My-Chat Room"},
        {"python_version": "3.14"},
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
    if "python_version" in context:  # the image is built on it
        assert f"ARG PYTHON_VERSION={context['python_version']}\n" in (project / "Dockerfile").read_text()
