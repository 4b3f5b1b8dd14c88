"""The Grafana dashboard and Prometheus config of compose/observability/: every panel's query names a
metric the app exports, checked against the app's declared metrics and a real scrape of real workers."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from app import metrics

from ..chat.client import ChatClient
from ..live_server import ROOT, live_server, service_env

OBSERVABILITY = ROOT / "compose" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "chat.json"
METRIC = re.compile(r"\bchat_[a-z_]+\b")


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def declared_samples() -> set[str]:
    """The sample names app/metrics.py's metrics are exported under."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def test_the_dashboard_shows_what_an_operator_asks_first() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    shown = " ".join(expr for _, expr in panel_queries())
    for wanted in ("chat_connections", "chat_frames_in_total", "chat_frames_out_total", "chat_layer_send_seconds",
                   "chat_errors_total", "chat_layer_dropped_total", "chat_slow_consumer_closes_total"):
        assert wanted in shown


def test_every_panel_names_a_declared_metric() -> None:
    declared = declared_samples()
    for title, expr in panel_queries():
        named = set(METRIC.findall(expr))
        assert named, f"panel {title!r} names no chat_ metric: {expr}"
        assert named <= declared, f"panel {title!r} names {sorted(named - declared)}, not exported"


def test_provisioning_points_grafana_at_prometheus_and_the_dashboard() -> None:
    datasource = yaml.safe_load((OBSERVABILITY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (source,) = datasource["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus"
    for _, target_uid in [(t, p["datasource"]["uid"]) for t, p in _panels()]:
        assert target_uid == source["uid"]
    provider = yaml.safe_load((OBSERVABILITY / "grafana/provisioning/dashboards/chat.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    scrape = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics" and scrape["authorization"]["type"] == "Bearer"


def scrape(url: str, token: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], p) for p in json.loads(DASHBOARD.read_text())["panels"]]


@pytest.mark.slow
async def test_a_real_scrape_has_every_metric_the_dashboard_queries(prefix: str, tmp_path: Path) -> None:
    token = "scrape-token-" + "s" * 24
    with live_server(service_env("inmemory", prefix, APP_SERVICE_TOKEN=token), workers=1,
                     tmp_path=tmp_path) as server:
        client = await ChatClient.connect(server.ws_url, server.login("alice"))
        await client.join("lobby")
        await client.send(type="message", room="lobby", text="hello")
        await client.expect("message")
        await client.send(type="no-such-frame")  # an error, so the errors counter has a sample
        await client.expect("error")
        scraped = await asyncio.to_thread(scrape, server.url + "/metrics", token)
        await client.close()
    exported = {line.split("{")[0].split(" ")[0] for line in scraped.splitlines() if line.startswith("chat_")}
    for title, expr in panel_queries():
        missing = set(METRIC.findall(expr)) - exported
        assert not missing, f"panel {title!r} queries {sorted(missing)}, absent from /metrics"
