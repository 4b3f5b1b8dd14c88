"""The API's docs and schema are served in development and hidden in production (the image's default)."""

from __future__ import annotations

from typing import Literal

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

from ..live_server import TEST_SECRET

DOCS = ("/docs", "/redoc", "/openapi.json")


@pytest.mark.parametrize(("environment", "status"), [("development", 200), ("test", 200), ("production", 404)])
def test_docs_only_outside_production(environment: Literal["development", "test", "production"], status: int) -> None:
    client = TestClient(create_app(Settings(environment=environment, secret_key=TEST_SECRET)))  # no lifespan
    for path in DOCS:
        assert client.get(path).status_code == status, (environment, path)
    assert client.get("/healthz").status_code == 200  # the rest of the API stays
