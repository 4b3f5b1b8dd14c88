"""Bake the template into temp dirs, isolated from the user's cookiecutter config and replay files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "{{cookiecutter.project_slug}}"

Bake = Callable[..., Path]


@pytest.fixture(scope="session")
def cookiecutter_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config with no default_context, whose replay and clone dirs live in a temp dir."""
    home = tmp_path_factory.mktemp("cookiecutter-home")
    config = home / "config.yaml"
    config.write_text(
        f"cookiecutters_dir: {home / 'cookiecutters'}\nreplay_dir: {home / 'replay'}\n"
    )
    return config


@pytest.fixture(scope="session")
def bake(tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path) -> Bake:
    def bake(**context: str) -> Path:
        out = tmp_path_factory.mktemp("bake")
        project = cookiecutter(
            str(ROOT),
            no_input=True,
            extra_context=context,
            output_dir=str(out),
            config_file=str(cookiecutter_config),
        )
        return Path(project)

    return bake
