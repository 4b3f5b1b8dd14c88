"""Prune what the chosen options do not use, create ``.env`` and print the next steps.

Pruning goes by file patterns, so files added later for a backend (``tests/channels/test_redis_cluster.py``,
``tests/channels/redis_servers.py``) go with it without touching this hook.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path

CONTEXT: dict[str, str] = json.loads(r"""{{ cookiecutter | tojson }}""")
PROJECT = Path.cwd()

# The in-memory backend always stays: it is the reference the conformance suite is read against.
BROKER_BACKENDS = ("redis", "rabbitmq", "nats", "postgresql")
BACKEND_PATTERNS = (
    "app/channels/backends/{name}",  # the broker's package: its layer and service parts
    "tests/channels/test_{name}*.py",
    "tests/channels/{name}_*.py",
    "compose/{name}*.yaml",
    "requirements/*{name}*.txt",  # redis.txt, celery-redis.txt
    "deploy/k8s/overlays/{name}",  # the broker's production overlay (chart values, operator resources)
    "deploy/k8s/components/{name}*",  # its settings, dev StatefulSet (<name>-dev), Celery on it (nats-celery)
)
# A developer's template checkout may hold these; cookiecutter.json copies them unrendered, then they go.
JUNK = (
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "*.egg-info",
    "test-results",
)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def remove_other_backends(keep: str) -> None:
    for name in BROKER_BACKENDS:
        if name != keep:
            for pattern in BACKEND_PATTERNS:
                for path in PROJECT.glob(pattern.format(name=name)):
                    remove(path)


def remove_celery() -> None:
    for path in (PROJECT / "app" / "worker", PROJECT / "tests" / "celery"):
        remove(path)
    for path in sorted(PROJECT.rglob("*celery*"), reverse=True):  # deepest first
        remove(path)


def remove_junk() -> None:
    for name in JUNK:
        for path in sorted(PROJECT.rglob(name), reverse=True):
            remove(path)


def create_env_file() -> None:
    """``.env`` from ``.env.example``, with a random value of this bake's own for every ``change-me``
    (the secret key and each broker password), readable by its owner only."""
    example, env = PROJECT / ".env.example", PROJECT / ".env"
    if example.is_file() and not env.exists():
        text = re.sub(r"^(\w+)=change-me$", lambda m: f"{m[1]}={secrets.token_urlsafe(48)}", example.read_text(),
                      flags=re.MULTILINE)
        descriptor = os.open(env, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(text)


def next_steps(context: dict[str, str]) -> str:
    """The one way to run it in development and the one in production, as the README says."""
    layer = context["channel_layer"]
    extras = [layer] if layer != "inmemory" else []
    if context["use_celery"] == "yes":
        extras.append("celery")
    broker = f" (the {layer} broker at .env's address)" if layer != "inmemory" else ""
    steps = [
        f"cd {context['project_slug']}",
        f"python{context['python_version']} -m venv .venv && . .venv/bin/activate",
        f"pip install -e '.[{','.join([*extras, 'test'])}]'",
        f"uvicorn app.main:app --reload --ws websockets-sansio  # development: one process{broker}",
        f"docker compose up --build  # production: the {layer} stack behind nginx on https://localhost"
        " (certificates: docs/tls.md), secrets from .env",
        "python -m pytest  # broker tests skip when their broker is down",
    ]
    header = f"{context['project_name']} ({layer} channel layer). Next steps:"
    return "\n".join([header, *(f"  {step}" for step in steps)])


def main(context: dict[str, str]) -> None:
    if context["keep_all_backends"] == "no":
        remove_other_backends(context["channel_layer"])
    if context["use_celery"] == "no":
        remove_celery()
    remove_junk()
    create_env_file()
    print(next_steps(context))


if __name__ == "__main__":
    main(CONTEXT)
