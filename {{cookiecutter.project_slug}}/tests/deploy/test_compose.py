"""The compose stacks, the image and the proxy: every file parsed by a Compose-spec parser, each stack
merged the way ``docker compose config`` merges it, and its topology and secrets asserted."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from .compose_model import MissingVariable, load_stack, parse

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "compose" / "base.yaml"
STACKS = sorted(path for path in (ROOT / "compose").glob("*.yaml") if path != BASE)
PINNED_IMAGE = re.compile(r"[\w./-]+:v?\d+\.\d+(\.\d+)?(-[\w.]+)?")
SHARED = {"app", "proxy", "worker", "beat", "database", "prometheus", "grafana"}
#: Under `--profile observability` only.
OBSERVABILITY = {"prometheus", "grafana"}
#: Oldest patched release per line of Redis for CVE-2025-49844 (Lua use-after-free).
REDIS_PATCHED = {(7, 4): (7, 4, 6), (8, 0): (8, 0, 4), (8, 2): (8, 2, 2)}
#: The secrets a stack may need; the hook gives each a random value in .env.
SECRETS = ("APP_SECRET_KEY", "APP_SERVICE_TOKEN", "GRAFANA_ADMIN_PASSWORD",
           "CHANNEL_ENCRYPTION_KEYS", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "RABBITMQ_PASSWORD",
           "NATS_PASSWORD")
ENV = {name: f"{name.lower().replace('_', '-')}-value-{'x' * 32}" for name in SECRETS}
REQUIRED_KEYS = ENV["CHANNEL_ENCRYPTION_KEYS"]


def stack(path: Path, **env: str) -> dict[str, Any]:
    return load_stack(path, {**ENV, **env})


def version(image: str) -> tuple[int, ...]:
    return tuple(int(part) for part in image.split(":")[1].split("-")[0].split("."))


def test_there_is_a_stack_per_kept_backend() -> None:
    backends = {p.parent.name for p in (ROOT / "app" / "channels" / "backends").glob("*/layer.py")}
    assert {p.stem for p in STACKS} == backends


def test_compose_yaml_includes_the_chosen_stack_with_the_env_file() -> None:
    (included,) = parse(ROOT / "compose.yaml")["include"]
    assert (ROOT / included["path"]).is_file() and included["path"] in {f"compose/{p.name}" for p in STACKS}
    assert included["env_file"] == ".env"


def test_every_file_is_valid_and_the_base_is_shared() -> None:
    base = parse(BASE)
    assert {"app", "proxy", "database"} <= set(base["services"])
    for path in STACKS:
        services = parse(path)["services"]
        for name in SHARED & set(services):
            assert services[name]["extends"] == {"file": "base.yaml", "service": name}, (path.name, name)
        if path.stem == "postgresql":  # one server: the layer's broker is the store's database
            assert services["postgresql"]["extends"] == {"file": "base.yaml", "service": "database"}
        assert len(path.read_text().splitlines()) < len(BASE.read_text().splitlines()), f"{path.name} is not short"


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.stem)
def test_stack_topology(path: Path) -> None:
    model = stack(path)
    services, networks = model["services"], model["networks"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)  # extends imports no service
        assert set(service.get("networks", {})) <= set(networks), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(".") or source in model.get("volumes", {}), (name, volume)
        if "image" in service and "build" not in service:
            assert PINNED_IMAGE.fullmatch(service["image"]), service["image"]
        if name == "grafana":
            assert service["ports"] == ["127.0.0.1:3000:3000"], "Grafana on the loopback only"
        elif name != "proxy":
            assert "ports" not in service, f"only the proxy publishes a port, not {name}"
    assert networks["internal"] == {"internal": True}
    app, proxy = services["app"], services["proxy"]
    assert set(proxy["networks"]) == {"edge"} and proxy["ports"] == ["80:80", "443:443"]
    assert proxy["depends_on"]["app"]["condition"] == "service_healthy"
    assert proxy["volumes"] == ["./nginx-main.conf:/etc/nginx/nginx.conf:ro",
                                "./nginx.conf:/etc/nginx/conf.d/default.conf:ro", "./certs:/etc/nginx/certs:ro",
                                "./acme:/var/www/acme:ro"]
    assert set(app["networks"]) == {"edge", "internal"}
    assert app["healthcheck"]["test"][0] == "CMD"
    assert (ROOT / app["build"]["args"]["REQUIREMENTS"]).exists() or not any((ROOT / "requirements").glob("*.txt"))
    assert app["environment"]["APP_ENVIRONMENT"] == "production"
    assert app["environment"]["APP_SECRET_KEY"] == ENV["APP_SECRET_KEY"]
    backends = {name for name in services if name not in SHARED}
    assert app["environment"]["APP_SERVICE_TOKEN"] == ENV["APP_SERVICE_TOKEN"]
    for name in backends | ({"database"} & set(services)):
        assert set(services[name]["networks"]) == {"internal"}, f"{name} must not leave the internal network"
        assert services[name]["healthcheck"]["test"][0] == "CMD"
        assert app["depends_on"][name]["condition"] == "service_healthy"
    for name in ("worker", "beat"):
        if name in services:
            assert services[name]["command"][:3] == ["celery", "-A", "app.worker.celery_app"]
            assert services[name]["depends_on"] == app["depends_on"]
            assert services[name]["environment"].items() >= app["environment"].items()
            assert services[name]["image"] == app["image"]


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.stem)
def test_store_and_workers(path: Path) -> None:
    services = stack(path)["services"]
    app = services["app"]
    url = app["environment"]["APP_DATABASE_URL"]
    if path.stem == "inmemory":
        assert app["deploy"]["replicas"] == 1 and app["environment"]["WEB_CONCURRENCY"] == "1"
        database = url.removeprefix("sqlite+aiosqlite:///")
        assert database != url and any(f":{Path(database).parent}" in volume for volume in app["volumes"])
        return
    assert app["deploy"]["replicas"] >= 2
    host = "postgresql" if path.stem == "postgresql" else "database"
    assert url == f"postgresql+asyncpg://chat:{ENV['POSTGRES_PASSWORD']}@{host}:5432/chat"
    assert services[host]["environment"]["POSTGRES_PASSWORD"] == ENV["POSTGRES_PASSWORD"]
    assert any(volume.endswith(":/var/lib/postgresql") for volume in services[host]["volumes"]), "postgres 18 layout"


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.stem)
def test_every_secret_is_required(path: Path) -> None:
    text = path.read_text() + BASE.read_text()
    assert not re.search(r"\$\{\w*(PASSWORD|SECRET)\w*:?-", text), "no default for a secret"
    used = [name for name in SECRETS if f"${{{name}:?" in text]
    assert "APP_SECRET_KEY" in used
    for name in used:
        if name == "POSTGRES_PASSWORD" and path.stem == "inmemory":
            continue  # base.yaml's database service, which the inmemory stack does not extend
        with pytest.raises(MissingVariable, match=name):
            stack(path, **{name: ""})


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.stem)
def test_brokers_require_the_passwords_their_urls_carry(path: Path) -> None:
    services = stack(path)["services"]
    env = services["app"]["environment"]
    if "redis" in services:
        redis = services["redis"]
        assert redis["command"][-2:] == ["--requirepass", ENV["REDIS_PASSWORD"]]
        assert redis["environment"]["REDISCLI_AUTH"] == ENV["REDIS_PASSWORD"]
        url = env.get("FASTAPI_WEBSOCKETS_REDIS_URL") or env["CELERY_BROKER_URL"]
        assert url == f"redis://:{ENV['REDIS_PASSWORD']}@redis:6379/0"
        major, minor, *_ = version(redis["image"])
        assert major > 8 or (major, minor) > (8, 2) or version(redis["image"]) >= REDIS_PATCHED[(major, minor)]
    if path.stem == "nats":
        command = services["nats"]["command"]
        assert command[command.index("--user") + 1] == "chat"
        assert command[command.index("--pass") + 1] == ENV["NATS_PASSWORD"]
        assert env["FASTAPI_WEBSOCKETS_NATS_SERVERS"] == f"nats://chat:{ENV['NATS_PASSWORD']}@nats:4222"
    if path.stem == "rabbitmq":
        rabbitmq = services["rabbitmq"]["environment"]
        assert rabbitmq == {"RABBITMQ_DEFAULT_USER": "chat", "RABBITMQ_DEFAULT_PASS": ENV["RABBITMQ_PASSWORD"]}
        assert env["FASTAPI_WEBSOCKETS_RABBITMQ_URL"] == f"amqp://chat:{ENV['RABBITMQ_PASSWORD']}@rabbitmq:5672/"
    if path.stem == "postgresql":
        dsn = env["FASTAPI_WEBSOCKETS_POSTGRESQL_DSN"]
        assert dsn == f"postgresql://chat:{ENV['POSTGRES_PASSWORD']}@postgresql:5432/channels"
        assert "CREATE DATABASE channels" in stack(path)["configs"]["channels-database"]["content"]


def test_env_example_lists_every_variable_the_stacks_read() -> None:
    example = dotenv_values(ROOT / ".env.example")
    texts = json.dumps([parse(path) for path in [BASE, *STACKS]])  # comments are not read
    for name in set(re.findall(r"\$\{(\w+)", texts)):
        assert name in example, f"{name} is missing from .env.example"
    for name in SECRETS:
        if name in example:
            assert example[name] == "change-me", f"{name} needs the placeholder the hook replaces"


def test_image_is_slim_non_root_production_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim AS runtime$", dockerfile, re.M)
    assert re.search(r"^USER app$", dockerfile, re.M)
    assert re.search(r"^\s+APP_ENVIRONMENT=production \\$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert 'ENTRYPOINT ["tini", "--"]' in dockerfile
    assert dockerfile.rstrip().endswith('CMD ["gunicorn", "-c", "gunicorn.conf.py", "app.main:app"]')
    assert "--require-hashes" in dockerfile
    assert not re.search(r"(?i)(secret|password)\s*=", dockerfile)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".git", "tests"} <= set(ignored)


def test_proxy_config() -> None:
    conf = (ROOT / "compose" / "nginx.conf").read_text()
    assert "proxy_http_version 1.1;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert re.search(r"proxy_read_timeout\s+\d{3,}s;", conf)
    log_format = re.search(r"log_format chat (.*?);", conf, re.S)
    assert log_format and not re.search(r"\$(request|request_uri|args|query_string|arg_\w+)\b", log_format.group(1))
    assert re.findall(r"access_log (\S+)", conf) == ["/dev/stdout"] and "access_log /dev/stdout chat;" in conf
    plain, tls = re.split(r"^server \{$", conf, flags=re.M)[1:]
    assert "listen 80;" in plain and "return 301 https://$host$request_uri;" in plain and "proxy_pass" not in plain
    assert "location ^~ /.well-known/acme-challenge/" in plain
    assert "listen 443 ssl backlog=4096;" in tls and "ssl_protocols TLSv1.2 TLSv1.3;" in tls
    assert "location ^~ /metrics" in tls
    assert "ssl_certificate /etc/nginx/certs/fullchain.pem;" in tls and "/etc/nginx/certs/privkey.pem;" in tls


def nginx_directive(conf: str, name: str) -> int:
    found = re.findall(rf"^\s*{name} (\d+);", conf, re.M)
    assert len(found) == 1, name
    return int(found[0])


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.stem)
def test_many_connections_fit_the_limits(path: Path) -> None:
    """Every service holding client sockets may open tens of thousands of files, and its listen queue
    is not cut short: the app (gunicorn raises its soft limit to the hard one) and nginx."""
    services = stack(path)["services"]
    main = (ROOT / "compose" / "nginx-main.conf").read_text()
    site = (ROOT / "compose" / "nginx.conf").read_text()
    for name in ("app", "proxy"):
        nofile = services[name]["ulimits"]["nofile"]
        assert nofile["soft"] == nofile["hard"] >= 65536, (name, nofile)
        assert int(services[name]["sysctls"]["net.core.somaxconn"]) >= 4096, name
    proxy_files = services["proxy"]["ulimits"]["nofile"]["hard"]
    # nginx's workers cannot raise their limit past the container's hard one; each connection is a file
    assert nginx_directive(main, "worker_connections") < nginx_directive(main, "worker_rlimit_nofile") <= proxy_files
    assert "include /etc/nginx/conf.d/*.conf;" in main, "the site (nginx.conf) is mounted in conf.d"
    backlog = int(re.search(r"listen 443 ssl backlog=(\d+);", site).group(1))  # type: ignore[union-attr]
    assert backlog <= int(services["proxy"]["sysctls"]["net.core.somaxconn"])
    low, high = map(int, services["proxy"]["sysctls"]["net.ipv4.ip_local_port_range"].split())
    assert low > 443 and high - low > 60000, "upstream ports for tens of thousands of proxied sockets"


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.stem)
def test_the_layer_encrypts_what_crosses_the_broker(path: Path) -> None:
    """Every service that talks to the layer gets the required encryption keys from .env."""
    backend = path.stem
    for name, service in stack(path)["services"].items():
        environment = service.get("environment") or {}
        if environment.get("FASTAPI_WEBSOCKETS_BACKEND"):
            keys = environment.get(f"FASTAPI_WEBSOCKETS_{backend.upper()}_SYMMETRIC_ENCRYPTION_KEYS")
            assert keys == REQUIRED_KEYS, (name, keys)


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.stem)
def test_observability_profile(path: Path) -> None:
    """Prometheus and Grafana start only with `--profile observability`, reach the app, mount their files."""
    model = stack(path)
    services = model["services"]
    for name in OBSERVABILITY:
        assert services[name]["profiles"] == ["observability"], name
    assert not any("profiles" in service for name, service in services.items() if name not in OBSERVABILITY)
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert set(prometheus["networks"]) == {"internal"} and "internal" in services["app"]["networks"]
    assert set(grafana["networks"]) == {"edge", "internal"}
    scrape = yaml.safe_load((ROOT / "compose" / "observability" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["dns_sd_configs"][0]["names"] == ["app"] and job["dns_sd_configs"][0]["port"] == 8000
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in prometheus["volumes"] + grafana["volumes"]}
    assert mounts == {"/etc/prometheus/prometheus.yml": "./observability/prometheus.yml",
                      "/etc/grafana/provisioning": "./observability/grafana/provisioning",
                      "/var/lib/grafana/dashboards": "./observability/grafana/dashboards"}
    for source in mounts.values():
        assert (ROOT / "compose" / source).exists(), source
    provider = yaml.safe_load((ROOT / "compose/observability/grafana/provisioning/dashboards/chat.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    token_file = job["authorization"]["credentials_file"]
    assert prometheus["secrets"] == [token_file.removeprefix("/run/secrets/")]
    assert model["secrets"] == {"service_token": {"environment": "APP_SERVICE_TOKEN"}}
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == ENV["GRAFANA_ADMIN_PASSWORD"]
    for name in ("APP_SERVICE_TOKEN", "GRAFANA_ADMIN_PASSWORD"):
        with pytest.raises(MissingVariable, match=name):
            stack(path, **{name: ""})
