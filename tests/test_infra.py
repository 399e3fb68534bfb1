"""The deployment files agree with the app: probe paths exist, ports line up, the grace
period covers the drain, Secrets feed the config's ${VARS}, and every metric a dashboard,
alert or autoscaler names is one the app really exports. (No Docker engine or cluster here:
the files are parsed and cross-checked, not deployed.)"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.routing import Route

from voicebot.calls.runtime import Runtime
from voicebot.config import load_config, load_config_text
from voicebot.recordings.upload import SHUTDOWN_UPLOAD_S
from voicebot.server.app import create_app
from voicebot.server.drain import LINGER_S
from voicebot.telemetry.metrics import Instruments
from voicebot.telemetry.setup import build_telemetry

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
METRIC = re.compile(r"\bvoicebot_[a-z_]+\b")


def k8s_docs() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc.get("apiVersion") != "kustomize.config.k8s.io/v1beta1":
                docs[doc["kind"]] = doc
    return docs


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    return k8s_docs()


@pytest.fixture(scope="module")
def app_paths() -> set[str]:
    app = create_app(Runtime(load_config(None)))
    return {r.path for r in app.routes if isinstance(r, Route)}


@pytest.fixture(scope="module")
def exported_metrics() -> set[str]:
    """Every series name /metrics can show: record once on each instrument of a private
    telemetry stack and read the Prometheus text back."""
    tel = build_telemetry({})
    instruments: Instruments = tel.instruments
    for instrument in vars(instruments).values():
        if hasattr(instrument, "record"):
            instrument.record(0.01, {})
        elif hasattr(instrument, "add"):
            instrument.add(1, {})
    instruments.watch_circuits(lambda: {"any": False})  # observable: reported when watched
    instruments.watch_tape_uploads(lambda: (0, {("tape", "ok"): 1}))
    names = set(METRIC.findall(tel.prometheus_text().decode()))
    tel.shutdown()
    return names


def container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def port_number(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in c["ports"] if p["name"] == port)


def configmap_toml(k8s: dict[str, dict[str, Any]]) -> str:
    return str(k8s["ConfigMap"]["data"]["voicebot.toml"])


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    on_disk -= {"prometheus-adapter-rules.yaml"}  # belongs to the adapter's install, not this namespace
    assert listed == on_disk


def test_required_kinds_and_fields(k8s: dict[str, dict[str, Any]]) -> None:
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret"):
        assert kind in k8s, kind
        assert k8s[kind]["metadata"]["name"]
    deployment = k8s["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert k8s["Service"]["spec"]["selector"].items() <= labels.items()
    assert k8s["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = k8s["PodDisruptionBudget"]["spec"]
    assert "maxUnavailable" in pdb or "minAvailable" in pdb
    c = container(k8s)
    assert c["image"] and c["resources"]["requests"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_probes_hit_routes_the_app_serves_on_the_container_port(
    k8s: dict[str, dict[str, Any]], app_paths: set[str]
) -> None:
    c = container(k8s)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port = c["ports"][0]["containerPort"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] in app_paths, (probe, get["path"], app_paths)
        assert port_number(c, get["port"]) == port
    config = load_config_text(configmap_toml(k8s), env=dict.fromkeys(_env_refs(k8s), "value-from-the-secret"))
    assert config.server.port == port
    annotations = k8s["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in app_paths
    assert int(annotations["prometheus.io/port"]) == port


def test_service_and_ingress_reach_the_container_port(k8s: dict[str, dict[str, Any]]) -> None:
    c = container(k8s)
    service_ports = k8s["Service"]["spec"]["ports"]
    assert [port_number(c, p["targetPort"]) for p in service_ports] == [c["ports"][0]["containerPort"]]
    backend = k8s["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == k8s["Service"]["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service_ports}


def _env_refs(k8s: dict[str, dict[str, Any]]) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", configmap_toml(k8s)))


def test_config_is_valid_and_every_variable_it_needs_comes_from_the_secret(k8s: dict[str, dict[str, Any]]) -> None:
    c = container(k8s)
    env = {e["name"]: e for e in c["env"]}
    secret = k8s["Secret"]
    for var in _env_refs(k8s):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
    config = load_config_text(configmap_toml(k8s), env=dict.fromkeys(_env_refs(k8s), "value-from-the-secret"))
    assert config.admission.store == "redis"
    # The config file is mounted where the container is told to read it.
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert c["args"] == ["--config", f"{mount['mountPath']}/voicebot.toml"]
    volume = next(v for v in k8s["Deployment"]["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == k8s["ConfigMap"]["metadata"]["name"]
    # No secret value is written into the manifests the kustomization applies.
    for path in K8S.glob("*.yaml"):
        if path.name != "secret.example.yaml":
            assert "sk-" not in path.read_text()


def test_grace_period_covers_prestop_drain_and_apology(k8s: dict[str, dict[str, Any]]) -> None:
    spec = k8s["Deployment"]["spec"]["template"]["spec"]
    c = container(k8s)
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    drain = tomllib.loads(configmap_toml(k8s))["server"]["drain_seconds"]
    # then the last tapes' uploads ([recording] store = "s3")
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + drain + LINGER_S + SHUTDOWN_UPLOAD_S + 5


def test_hpa_scales_the_deployment_on_a_metric_the_app_exports(
    k8s: dict[str, dict[str, Any]], exported_metrics: set[str]
) -> None:
    hpa = k8s["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["scaleTargetRef"]["name"] == k8s["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] >= 2  # the PDB's maxUnavailable=1 then still leaves a pod serving
    pods = [m for m in hpa["metrics"] if m["type"] == "Pods"]
    assert [m["pods"]["metric"]["name"] for m in pods] == ["voicebot_calls_active"]
    assert "voicebot_calls_active" in exported_metrics
    adapter = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())
    rule = adapter["rules"]["custom"][0]
    assert set(METRIC.findall(rule["seriesQuery"])) == {"voicebot_calls_active"}
    assert rule["name"]["as"] == "voicebot_calls_active"


def test_dashboard_and_alerts_only_query_exported_metrics_and_cover_them(exported_metrics: set[str]) -> None:
    dashboard = json.loads((INFRA / "grafana" / "voicebot-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used <= exported_metrics, used - exported_metrics
    # every metric family the app exports has a panel
    families = {re.sub(r"_(bucket|sum|count)$", "", m) for m in exported_metrics}
    shown = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    assert families == shown, families - shown
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    alerts = yaml.safe_load((INFRA / "prometheus" / "voicebot-alerts.yml").read_text())
    alert_metrics = {m for g in alerts["groups"] for r in g["rules"] for m in METRIC.findall(r["expr"])}
    assert alert_metrics and alert_metrics <= exported_metrics


def test_prometheus_and_collector_configs_are_consistent(app_paths: set[str]) -> None:
    prometheus = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    assert jobs["voicebot"]["metrics_path"] in app_paths
    collector = yaml.safe_load((INFRA / "otel" / "collector.yaml").read_text())
    for name, pipeline in collector["service"]["pipelines"].items():
        for part in ("receivers", "processors", "exporters"):
            for component in pipeline[part]:
                assert component in collector[part], (name, part, component)
    assert {"traces", "metrics"} <= set(collector["service"]["pipelines"])
    http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    deployment = k8s_docs()["Deployment"]
    env = {e["name"]: e.get("value") for e in container({"Deployment": deployment})["env"]}
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":" + http.rsplit(":", 1)[1])


def test_dockerfile_is_slim_non_root_runtime_only_with_a_healthcheck(
    k8s: dict[str, dict[str, Any]], app_paths: set[str]
) -> None:
    dockerfile = (INFRA / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert froms and all(f == "python:3.12-slim" or f.startswith("python:3.12-slim@") for f in froms)
    final_stage = dockerfile.split("\nFROM ")[-1]
    user = re.findall(r"^USER\s+(\S+)", final_stage, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    # runtime deps + the chosen provider extras (+ OTLP), never [dev]
    assert re.findall(r"pip install (\S+)", dockerfile) == ['".[$EXTRAS]"']
    assert re.findall(r"^ARG EXTRAS=(\S+)", dockerfile, re.M) == ["all,otlp"]
    healthcheck = re.search(r"^HEALTHCHECK .*?(?<!\\)$", final_stage, re.M | re.S)
    assert healthcheck is not None
    health_path = re.search(r"127\.0\.0\.1:(\d+)(/\w+)", final_stage)
    assert health_path is not None and health_path.group(2) == "/healthz" and "/healthz" in app_paths
    exposed = int(re.findall(r"^EXPOSE\s+(\d+)", final_stage, re.M)[0])
    assert exposed == int(health_path.group(1)) == container(k8s)["ports"][0]["containerPort"]
    assert re.search(r'^ENTRYPOINT \["voicebot", "serve"\]', final_stage, re.M)
    # Everything the build copies exists; everything the image must not carry is ignored.
    for src in re.findall(r"^COPY (?!--from)(.+?) \S+$", dockerfile, re.M):
        for item in src.split():
            assert (ROOT / item).exists(), item
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests", ".env", "tapes"} <= ignored
