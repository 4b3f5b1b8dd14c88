"""The compose stacks, the image and the proxy: parsed by a Compose-spec parser, topology asserted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import compose_spec
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STACKS = sorted((ROOT / "compose").glob("*.yaml"))
PINNED_IMAGE = re.compile(r"[\w./-]+:\d+\.\d+(\.\d+)?(-[\w.]+)?")


def load(path: Path) -> dict[str, Any]:
    text = path.read_text()
    compose = compose_spec.PyCompose.from_yaml(text)  # raises on anything the spec rejects
    compose.validate()
    parsed: dict[str, Any] = yaml.safe_load(text)
    return parsed


def test_there_is_a_stack_per_kept_backend() -> None:
    backends = {p.parent.name for p in (ROOT / "app" / "channels" / "backends").glob("*/layer.py")}
    assert {p.stem for p in STACKS} == backends


def test_compose_yaml_includes_the_chosen_stack() -> None:
    compose = load(ROOT / "compose.yaml")
    (included,) = compose["include"]
    assert (ROOT / included).exists()


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.stem)
def test_stack_topology(path: Path) -> None:
    services = load(path)["services"]
    app = services["app"]
    assert app["healthcheck"]["test"][0] == "CMD"
    assert app["build"]["args"]["REQUIREMENTS"].startswith("requirements/")
    assert (ROOT / app["build"]["args"]["REQUIREMENTS"]).exists() or not any((ROOT / "requirements").glob("*.txt"))
    assert "${APP_SECRET_KEY:?" in path.read_text(), "the secret must come from the environment, never a default"
    if path.stem == "inmemory":
        assert app["deploy"]["replicas"] == 1 and app["environment"]["WEB_CONCURRENCY"] == "1"
        return
    broker = services[path.stem]
    assert PINNED_IMAGE.fullmatch(broker["image"]), broker["image"]
    assert broker["healthcheck"]["test"][0] == "CMD"
    assert any(":" in volume and not volume.startswith(("/", ".")) for volume in broker["volumes"]), "named volume"
    assert app["deploy"]["replicas"] >= 2
    assert app["depends_on"][path.stem]["condition"] == "service_healthy"
    proxy = services["proxy"]
    assert PINNED_IMAGE.fullmatch(proxy["image"])
    assert proxy["depends_on"]["app"]["condition"] == "service_healthy"
    assert proxy["volumes"] == ["./nginx.conf:/etc/nginx/conf.d/default.conf:ro"]
    for name in ("worker", "beat"):
        if name in services:
            assert services[name]["command"][:3] == ["celery", "-A", "app.worker.celery_app"]
            assert services[name]["depends_on"] == app["depends_on"]


def test_image_is_slim_non_root_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim AS runtime$", dockerfile, re.M)
    assert re.search(r"^USER app$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert 'ENTRYPOINT ["tini", "--"]' in dockerfile
    assert "--require-hashes" in dockerfile
    assert not re.search(r"(?i)(secret|password)\s*=", dockerfile)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".git", "tests"} <= set(ignored)


def test_proxy_upgrades_websockets() -> None:
    conf = (ROOT / "compose" / "nginx.conf").read_text()
    assert "proxy_http_version 1.1;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert re.search(r"proxy_read_timeout\s+\d{3,}s;", conf)
