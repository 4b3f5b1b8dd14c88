"""deploy/k8s in every bake: each overlay renders with ``kubectl kustomize``, every document is valid
against the Kubernetes schemas, the properties the docs promise hold, and checkov finds nothing
that is not skipped with a reason.

Rendering and validation run on each broker x Celery x keep_all_backends bake; checkov (slow: half
a minute) once, over one pruned bake per backend.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from .conftest import ROOT, TEMPLATE, Bake

LAYERS = ("inmemory", "redis", "rabbitmq", "nats", "postgresql")
BROKERS = LAYERS[1:]
#: The oldest and a recent Kubernetes the manifests are written for (docs/kubernetes.md).
K8S_VERSIONS = ("1.30.0", "1.34.0")
#: Custom resources of the operators the overlays use: no schema ships for them.
CUSTOM_KINDS = {("postgresql.cnpg.io/v1", "Cluster"), ("rabbitmq.com/v1beta1", "RabbitmqCluster")}
#: The only checkov checks a manifest may skip, each with its reason in a checkov.io/skip annotation.
ALLOWED_SKIPS = {
    "CKV_K8S_43",  # image digest: the app's image is built by the project, pinned in the release
    "CKV_K8S_35",  # secrets as files: settings come from the environment (by secretKeyRef)
    "CKV_K8S_8",  # liveness: Celery beat
    "CKV_K8S_9",  # readiness: Celery worker and beat (no Service)
    "CKV_K8S_15",  # pull policy: the dev overlay runs the image loaded into a laptop cluster
    "CKV_K8S_40",  # high UID: the official postgres image's own user, dev only
}
SKIP_ANNOTATION = re.compile(r"(CKV2?_K8S_\d+)=(.{20,})")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
#: Documents already found valid: most repeat across overlays and bakes, and a validation reads
#: the schema files anew.
VALID: set[str] = set()
Docs = list[dict[str, Any]]
#: A bake's options, its project, and each overlay's rendered documents.
Rendered = tuple[dict[str, str], Path, dict[str, Docs]]


def k8s_combos() -> list[dict[str, str]]:
    combos = []
    for layer, celery, keep in itertools.product(LAYERS, ("no", "yes"), ("no", "yes")):
        if layer == "inmemory" and celery == "yes":
            continue  # rejected by the pre-generation hook
        workers = "1" if layer == "inmemory" else "2"
        combos.append({"channel_layer": layer, "use_celery": celery, "keep_all_backends": keep, "web_workers": workers})
    return combos


def combo_id(combo: dict[str, str]) -> str:
    return f"{combo['channel_layer']}-celery_{combo['use_celery']}-keep_{combo['keep_all_backends']}"


def tool(name: str, *candidates: Path) -> str:
    """The executable ``name``; missing, the test fails under CI (bin/test installs it) and skips elsewhere."""
    found = next((str(path) for path in candidates if path.is_file()), None) or shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (bin/test sets it up)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def kustomize(overlay: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(overlay)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay}:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def overlays(project: Path) -> dict[str, list[dict[str, Any]]]:
    return {path.name: kustomize(path) for path in sorted((project / "deploy/k8s/overlays").iterdir())}


@pytest.fixture(scope="module", params=k8s_combos(), ids=combo_id)
def rendered(request: pytest.FixtureRequest, bake: Bake) -> Rendered:
    combo: dict[str, str] = request.param
    project = bake(**combo)
    return combo, project, overlays(project)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any], config: dict[str, str]) -> dict[str, Any]:
    """A container's environment: its ConfigMap's values, then its own entries (by name)."""
    return {**config, **{item["name"]: item for item in container.get("env", [])}}


def test_overlays_per_bake(rendered: Rendered) -> None:
    """One overlay per kept broker and a dev overlay; dev runs the chosen broker only."""
    combo, project, docs = rendered
    layer = combo["channel_layer"]
    kept = set(BROKERS) if combo["keep_all_backends"] == "yes" else {layer} - {"inmemory"}
    assert set(docs) == kept | {"dev"}
    brokers = {doc["metadata"]["name"] for doc in docs["dev"] if doc["kind"] == "StatefulSet"}
    expected = {"chat-db"} | ({f"chat-{layer}"} if layer in {"redis", "rabbitmq", "nats"} else set())
    assert brokers == expected
    for name, overlay in docs.items():
        config = find(overlay, "ConfigMap", "chat-config")["data"]
        assert config["FASTAPI_WEBSOCKETS_BACKEND"] == (layer if name == "dev" else name)
        assert config["WEB_CONCURRENCY"] == ("1" if name == "dev" and layer == "inmemory" else combo["web_workers"])
        assert {doc["metadata"].get("namespace") for doc in overlay if doc["kind"] != "Namespace"} == {"chat"}
        images = {container["image"] for doc in overlay if doc["kind"] in ("Deployment", "Job")
                  for container in pod_spec(doc)["containers"]}
        assert images == {f"{project.name}:{layer if name == 'dev' else name}"}  # the stack's image, its client
        hpas = [doc for doc in overlay if doc["kind"] == "HorizontalPodAutoscaler"]
        assert [doc["apiVersion"] for doc in hpas] == ([] if name == "dev" else ["autoscaling/v2"])


def test_schemas(rendered: Rendered) -> None:
    """Every document is valid (strict: no unknown field) against the Kubernetes schemas."""
    _, _, docs = rendered
    for name, overlay in docs.items():
        for doc in overlay:
            if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
                assert doc["metadata"]["name"] and doc["spec"], (name, doc["kind"])
                continue
            key = json.dumps(doc, sort_keys=True)
            if key in VALID:
                continue
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} on {version}: {exc.message}")
            VALID.add(key)


def test_workloads_hardened(rendered: Rendered) -> None:
    """Every pod: no service account token, seccomp, non-root, read-only root with /tmp writable,
    no privilege escalation, no capability, requests and limits."""
    _, _, docs = rendered
    for name, overlay in docs.items():
        for doc in (doc for doc in overlay if doc["kind"] in WORKLOADS):
            where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
            spec = pod_spec(doc)
            assert spec["automountServiceAccountToken"] is False, where
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert spec["securityContext"]["runAsNonRoot"] is True, where
            mounts_tmp = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
            for container in spec["containers"]:
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, where
                assert context["readOnlyRootFilesystem"] is True, where
                assert context["capabilities"] == {"drop": ["ALL"]}, where
                assert context.get("privileged") is False, where
                assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
                assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
                mounts = container["volumeMounts"]
                assert any(m["mountPath"] == "/tmp" and m["name"] in mounts_tmp for m in mounts), where


def test_web_pods(rendered: Rendered) -> None:
    """Probes on the app's health endpoints, a drain that fits in the grace period, the metrics dir."""
    _, project, docs = rendered
    drain_wait = re.search(
        r"def stop_connections.*?asyncio\.timeout\((\d+)\)", (project / "app/chat/service.py").read_text(), re.DOTALL
    )
    assert drain_wait, "app/chat/service.py: stop_connections no longer waits with asyncio.timeout(<seconds>)"
    routes = (project / "app/chat/api.py").read_text()
    for name, overlay in docs.items():
        config = find(overlay, "ConfigMap", "chat-config")["data"]
        spec = pod_spec(find(overlay, "Deployment", "chat-web"))
        (web,) = spec["containers"]
        assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert web["startupProbe"]["httpGet"]["path"] == "/healthz"
        for path in ("/readyz", "/healthz"):
            assert f'@router.get("{path}"' in routes
        sleep = web["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep"
        graceful = int(config["GRACEFUL_TIMEOUT"])
        assert graceful > int(drain_wait.group(1)), "gunicorn must outwait the app's 1001 drain"
        assert spec["terminationGracePeriodSeconds"] >= int(sleep[1]) + graceful + 5, name
        multiproc = config["PROMETHEUS_MULTIPROC_DIR"]
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert any(
            m["mountPath"] == multiproc and "emptyDir" in volumes[m["name"]] for m in web["volumeMounts"]
        ), name
        assert web["args"][0].startswith('ulimit -n "$(ulimit -Hn)"') and "exec gunicorn" in web["args"][0]
        if name != "dev":
            assert find(overlay, "PodDisruptionBudget", "chat-web")["spec"]["maxUnavailable"] == 1
            assert find(overlay, "HorizontalPodAutoscaler", "chat-web")["spec"]["minReplicas"] >= 2


def test_secrets_by_reference(rendered: Rendered) -> None:
    """No Secret is rendered, no password is written in a URL: URLs take theirs from secretKeyRef variables."""
    _, _, docs = rendered
    credentials = re.compile(r"://[^/@\s]*:([^@\s]*)@")
    for name, overlay in docs.items():
        assert [doc for doc in overlay if doc["kind"] == "Secret"] == []
        config = find(overlay, "ConfigMap", "chat-config")["data"]
        for key, value in config.items():
            assert not re.search(r"PASSWORD|SECRET|TOKEN", key) and not credentials.search(value), (name, key)
        for doc in (doc for doc in overlay if doc["kind"] in WORKLOADS):
            for container in pod_spec(doc)["containers"]:
                env = {item["name"]: item for item in container.get("env", [])}
                for variable, item in env.items():
                    if re.search(r"PASSWORD|SECRET|TOKEN|_USER$", variable):
                        assert "secretKeyRef" in item.get("valueFrom", {}), (name, variable)
                    for password in credentials.findall(item.get("value", "")):
                        reference = re.fullmatch(r"\$\((\w+)\)", password)
                        assert reference, (name, variable, "a password written in a URL")
                        defined = list(env).index(reference.group(1))  # expands only if defined before
                        assert defined < list(env).index(variable), (name, variable)
                        assert "secretKeyRef" in env[reference.group(1)]["valueFrom"]


def test_ingress(rendered: Rendered) -> None:
    """WebSockets outlive ingress-nginx's 60 s defaults and pass unbuffered."""
    _, _, docs = rendered
    for overlay in docs.values():
        ingress = find(overlay, "Ingress", "chat-web")
        annotations = ingress["metadata"]["annotations"]
        assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
        assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
        assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
        assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "chat-web"


def test_network_policies(rendered: Rendered) -> None:
    """The broker and the database accept only the app's pods; every app pod carries the label."""
    _, _, docs = rendered
    for name, overlay in docs.items():
        backing = find(overlay, "NetworkPolicy", "chat-backing-services")["spec"]
        assert backing["podSelector"] == {"matchLabels": {"chat/role": "backing-service"}}
        assert backing["policyTypes"] == ["Ingress"]
        assert backing["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"chat/role": "app"}}}]}]
        web = find(overlay, "NetworkPolicy", "chat-web")["spec"]
        sources = [source for rule in web["ingress"] for source in rule["from"]]
        assert {"podSelector": {"matchLabels": {"chat/role": "app"}}} in sources
        assert any(s.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                   == "ingress-nginx" for s in sources)
        for doc in (doc for doc in overlay if doc["kind"] in WORKLOADS):
            role = doc["spec"]["template"]["metadata"]["labels"].get("chat/role")
            app = doc["metadata"]["name"] in {"chat-web", "chat-worker", "chat-beat", "chat-migrate"}
            assert role == ("app" if app else "backing-service"), (name, doc["metadata"]["name"])
        for doc in (doc for doc in overlay if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS):
            labels = doc["spec"].get("inheritedMetadata", {}).get("labels") or (
                doc["spec"]["override"]["statefulSet"]["spec"]["template"]["metadata"]["labels"]
            )
            assert labels == {"chat/role": "backing-service"}, (name, doc["kind"])


def test_jobs_and_celery(rendered: Rendered) -> None:
    """The migration Job runs ``python -m app migrate``; Celery's worker and beat exist only with Celery."""
    combo, _, docs = rendered
    for name, overlay in docs.items():
        (migrate,) = pod_spec(find(overlay, "Job", "chat-migrate"))["containers"]
        assert migrate["command"] == ["python", "-m", "app", "migrate"]
        deployments = {doc["metadata"]["name"] for doc in overlay if doc["kind"] == "Deployment"}
        celery = {"chat-worker", "chat-beat"} if combo["use_celery"] == "yes" else set()
        assert deployments == {"chat-web"} | celery
        if celery:
            beat = find(overlay, "Deployment", "chat-beat")["spec"]
            assert beat["replicas"] == 1 and beat["strategy"] == {"type": "Recreate"}
            config = find(overlay, "ConfigMap", "chat-config")["data"]
            worker_env = env_of(pod_spec(find(overlay, "Deployment", "chat-worker"))["containers"][0], config)
            # kombu has no NATS transport: Celery on a NATS stack queues in the app's database
            on_nats = name == "nats" or (name == "dev" and combo["channel_layer"] == "nats")
            assert ("CELERY_BROKER_URL" in worker_env) == on_nats


def test_skips_have_reasons(rendered: Rendered) -> None:
    """Each checkov skip names an allowed check and says why."""
    _, _, docs = rendered
    for name, overlay in docs.items():
        for doc in overlay:
            for key, value in doc["metadata"].get("annotations", {}).items():
                if key.startswith("checkov.io/skip"):
                    match = SKIP_ANNOTATION.fullmatch(value)
                    assert match and match.group(1) in ALLOWED_SKIPS, (name, doc["metadata"]["name"], value)


@pytest.mark.slow
def test_checkov(bake: Bake, tmp_path: Path) -> None:
    """checkov's Kubernetes checks pass on every overlay of one pruned bake per backend."""
    checkov = tool("checkov", Path(os.environ.get("CHECKOV", ROOT / ".venv-checkov/bin/checkov")))
    for layer in LAYERS:
        project = bake(channel_layer=layer, use_celery="no" if layer == "inmemory" else "yes",
                       keep_all_backends="no", web_workers="1" if layer == "inmemory" else "2")
        for name, docs in overlays(project).items():
            (tmp_path / f"{layer}-{name}.yaml").write_text(yaml.safe_dump_all(docs))
    result = subprocess.run(
        [checkov, "-d", str(tmp_path), "--framework", "kubernetes", "--compact", "--quiet", "-o", "json",
         "--skip-download"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}"
        for report in reports
        for check in report.get("results", {}).get("failed_checks", [])
    ]
    assert failed == []
    summary = reports[0]["summary"]
    assert summary["passed"] > 500 and summary["parsing_errors"] == 0, summary


def test_chart_values_match_the_overlays() -> None:
    """The charts' values give the brokers the label the NetworkPolicies select, and agree with what
    the app's settings expect of them (Service, Secret, replicas)."""
    overlays = TEMPLATE / "deploy/k8s/overlays"
    redis = yaml.safe_load((overlays / "redis/values.yaml").read_text())
    for role in ("master", "replica"):
        assert redis[role]["podLabels"] == {"chat/role": "backing-service"}
    assert redis["auth"]["enabled"] is True and redis["architecture"] == "replication"
    assert redis["networkPolicy"]["enabled"] is False  # ours select the pods instead
    redis_env = (TEMPLATE / "deploy/k8s/components/redis/env.yaml").read_text()
    assert "name: chat-redis\n" in redis_env and "@chat-redis-master:6379/" in redis_env  # release chat-redis

    nats = yaml.safe_load((overlays / "nats/values.yaml").read_text())
    assert nats["podTemplate"]["merge"]["metadata"]["labels"] == {"chat/role": "backing-service"}
    assert nats["config"]["jetstream"]["enabled"] is True and nats["config"]["cluster"]["enabled"] is True
    replicas = yaml.safe_load((overlays / "nats/config.yaml").read_text())["data"]["FASTAPI_WEBSOCKETS_NATS_REPLICAS"]
    assert nats["config"]["cluster"]["replicas"] == int(replicas) == 3
    secret = nats["container"]["env"]["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    nats_env = yaml.safe_load((TEMPLATE / "deploy/k8s/components/nats/env.yaml").read_text())
    assert nats_env[0]["value"]["valueFrom"]["secretKeyRef"] == secret
    assert nats["config"]["merge"]["authorization"]["user"] == "chat"
    assert nats_env[1]["value"]["value"].startswith("nats://chat:$(NATS_PASSWORD)@chat-nats:4222")

    (cluster,) = yaml.safe_load_all((overlays / "rabbitmq/rabbitmqcluster.yaml").read_text())
    assert cluster["spec"]["replicas"] == 3
    quorum = yaml.safe_load((overlays / "rabbitmq/config.yaml").read_text())["data"]
    assert quorum == {"FASTAPI_WEBSOCKETS_RABBITMQ_QUORUM": "true"}
    (db,) = yaml.safe_load_all((TEMPLATE / "deploy/k8s/components/database-cnpg/cluster.yaml").read_text())
    # the operator names Secret chat-db-app and Service chat-db-rw after the Cluster
    assert db["metadata"]["name"] == "chat-db" and db["spec"]["instances"] == 3
    assert db["spec"]["bootstrap"]["initdb"] == {"database": "chat", "owner": "chat"}
