"""What a benchmark runs against: a baked copy of the template, and the peers' own virtualenv.

The benchmarks live beside the template, not in what it generates: they measure a *baked* project
(``--project PATH``, or a fresh bake in a temp dir) with the interpreter running them, which must have
the generated project's dependencies. The comparison peers (the seed package, Django Channels layers,
python-socketio, broadcaster) pin things ours must not see, so they live in ``bench/.venv-peers``
(git-ignored), created on first use from ``bench/peers/requirements.txt``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TEMPLATE = BENCH.parent
PEERS_VENV = Path(os.environ.get("PEERS_VENV", BENCH / ".venv-peers"))
PEERS_REQUIREMENTS = BENCH / "peers" / "requirements.txt"
#: Every backend kept, so one bake serves every case; Redis for the end-to-end run.
BAKE_CONTEXT = {"channel_layer": "redis", "keep_all_backends": "yes", "web_workers": "2", "use_celery": "no"}
BROKER_URLS = {
    "redis": os.environ.get("FASTAPI_WEBSOCKETS_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "postgresql": os.environ.get("FASTAPI_WEBSOCKETS_POSTGRESQL_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    "nats": os.environ.get("FASTAPI_WEBSOCKETS_NATS_SERVERS", "nats://127.0.0.1:4222"),
    "rabbitmq": os.environ.get("FASTAPI_WEBSOCKETS_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
}


def check_project(path: Path) -> Path:
    """A baked project (it has ``app/channels``), or a clear error naming what is wrong."""
    path = path.resolve()
    if not (path / "app" / "channels" / "config.py").is_file():
        raise SystemExit(f"--project {path}: not a baked project (no app/channels/config.py)")
    return path


@contextlib.contextmanager
def project(path: Path | None) -> Iterator[Path]:
    """``path`` when given; else a fresh bake of this template, removed afterwards."""
    if path is not None:
        yield check_project(path)
        return
    from cookiecutter.main import cookiecutter

    out = Path(tempfile.mkdtemp(prefix="bench-bake-"))
    try:
        baked = cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(out), extra_context=BAKE_CONTEXT,
                             default_config=True)
        print(f"baked {baked}", file=sys.stderr)
        yield Path(baked)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def peers_python(venv: Path = PEERS_VENV, create: bool = True) -> Path | None:
    """The peers' interpreter; the virtualenv is created and filled first when missing and ``create``."""
    python = venv / "bin" / "python"
    if python.exists() or not create:
        return python if python.exists() else None
    print(f"creating the peers' virtualenv {venv} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(PEERS_REQUIREMENTS)], check=True)
    return python
