"""The pre-generation hook refuses what cannot run, with one line naming the option, and writes nothing."""

from __future__ import annotations

import re
import stat
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


SECRETS = ("APP_SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "RABBITMQ_PASSWORD", "NATS_PASSWORD")


def env_values(project: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (project / ".env").read_text().splitlines())
    return {key: value for key, value in (pair for pair in pairs if len(pair) == 2) if not key.startswith("#")}


@pytest.mark.parametrize(
    ("context", "secrets"),
    [
        ({"channel_layer": "inmemory"}, {"APP_SECRET_KEY", "POSTGRES_PASSWORD"}),
        ({"channel_layer": "nats", "use_celery": "yes", "web_workers": "2"},
         {"APP_SECRET_KEY", "POSTGRES_PASSWORD", "NATS_PASSWORD", "REDIS_PASSWORD"}),
        ({"channel_layer": "redis", "keep_all_backends": "yes", "web_workers": "2"}, set(SECRETS)),
    ],
    ids=["inmemory", "nats-celery", "redis-all"],
)
def test_env_file_is_private_with_a_random_value_per_secret(
    context: dict[str, str], secrets: set[str], bake: Bake
) -> None:
    first, second = env_values(bake(**context)), env_values(bake(**context))
    project = bake(**context)
    assert stat.S_IMODE((project / ".env").stat().st_mode) == 0o600
    assert {name for name in SECRETS if name in first} == secrets
    values = [first[name] for name in secrets]
    assert all(len(value) >= 32 and re.fullmatch(r"[\w-]+", value) for value in values), "URL-safe, 32+"
    assert len(set(values)) == len(values), "each secret its own value"
    assert all(first[name] != second[name] for name in secrets), "each bake its own values"
    assert not re.search(r"^\w+=change-me$", (project / ".env").read_text(), re.MULTILINE), "no placeholder left"


def test_one_way_to_run_in_development_and_one_in_production(bake: Bake, capfd: pytest.CaptureFixture[str]) -> None:
    project = bake(channel_layer="redis", web_workers="2")
    steps = capfd.readouterr().out
    commands = [line.split("#")[0].strip() for line in steps.splitlines()[1:]]
    development, production = "uvicorn app.main:app --reload --ws websockets-sansio", "docker compose up --build"
    assert development in commands and production in commands
    assert not any(command.startswith(("gunicorn", "python -m app")) for command in commands)
    readme = (project / "README.md").read_text()
    run = readme.split("## Run it", 1)[1].split("\n## ", 1)[0]
    block = [line.split("#")[0].strip() for line in run.split("```")[1].splitlines()]
    assert development in block and production in block and not any(line.startswith("gunicorn") for line in block)
    dockerfile = (project / "Dockerfile").read_text()
    assert 'CMD ["gunicorn", "-c", "gunicorn.conf.py", "app.main:app"]' in dockerfile
    assert "def main" not in (project / "app" / "server.py").read_text()


def test_gitignore_keeps_secrets_and_artefacts_out(bake: Bake) -> None:
    project = bake()
    ignored = (project / ".gitignore").read_text().split()
    assert {".env", ".venv*/", "__pycache__/", ".pytest_cache/", "test-results/", "build/", "dist/"} <= set(ignored)
    assert "!.env.example" in ignored
