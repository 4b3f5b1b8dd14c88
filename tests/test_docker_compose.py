"""docker/compose.yaml is a valid Compose file serving each broker where the baked tests look for it."""

from __future__ import annotations

import re
from typing import Any

import compose_spec
import pytest

from .conftest import ROOT, TEMPLATE

COMPOSE = ROOT / "docker" / "compose.yaml"
PORTS = {"postgresql": 5432, "redis": 6379, "rabbitmq": 5672, "nats": 4222}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = compose_spec.PyCompose.from_yaml(
        COMPOSE.read_text()
    )  # raises on a spec violation
    compose.validate()
    compose.to_spec()
    services: dict[str, Any] = compose.to_dict()["services"]
    return services


def test_services_and_ports(services: dict[str, Any]) -> None:
    assert set(services) == set(PORTS)
    for name, port in PORTS.items():
        assert services[name]["ports"] == [f"127.0.0.1:{port}:{port}"]


def test_ports_match_the_baked_tests_defaults() -> None:
    brokers = (TEMPLATE / "tests" / "brokers.py").read_text()
    for name, port in PORTS.items():
        assert re.search(
            rf'"{name}": os\.environ\.get\("\w+", "[^"]*:{port}[/"]', brokers
        ), name


def test_pinned_and_healthchecked(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+(\.\d+)?(-[\w.]+)?", service["image"]), (
            name,
            service["image"],
        )
        assert service["healthcheck"]["test"][0] == "CMD", name


def test_broker_settings(services: dict[str, Any]) -> None:
    assert services["postgresql"]["environment"] == {
        "POSTGRES_HOST_AUTH_METHOD": "trust",
        "POSTGRES_DB": "test",
    }
    assert "-js" in services["nats"]["command"]


def test_redis_has_the_lua_use_after_free_fix(services: dict[str, Any]) -> None:
    """CVE-2025-49844 is fixed in 7.4.6, 8.0.4 and 8.2.2: the laptop brokers run no older Redis."""
    major, minor, patch = (int(part) for part in services["redis"]["image"].split(":")[1].split("-")[0].split("."))
    patched = {(7, 4): 6, (8, 0): 4, (8, 2): 2}
    assert (major, minor) > (8, 2) or patch >= patched[(major, minor)], services["redis"]["image"]


def test_images_match_the_readme(services: dict[str, Any]) -> None:
    readme = (ROOT / "docker" / "README.md").read_text()
    for name, service in services.items():
        assert f"`{service['image']}`" in readme, name
