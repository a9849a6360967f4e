"""What users deploy: the Dockerfile, the Kubernetes manifests, the Grafana dashboard, and the
installation the image makes (no container engine runs here, so the test makes the same one:
the wheel installed into a fresh virtualenv, then started)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from core.config import load_config
from core.metrics import Metrics
from examples.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
#: The Kubernetes version the manifests are validated against: native sidecars are GA here.
KUBERNETES_VERSION = "1.33.0"
#: API groups of custom resources: no schema ships for them, they are checked by hand below.
CRD_GROUPS = ("monitoring.coreos.com/",)


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def manifest(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name)


def configmap_config(tmp_path: Path) -> Path:
    data = manifest("ConfigMap", "sidecache-config")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(data)
    return path


def sidecar() -> dict[str, Any]:
    pod = manifest("Deployment", "agent-service")["spec"]["template"]["spec"]
    return next(c for c in pod["initContainers"] if c["name"] == "sidecache")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


# --- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_runs_sidecache_non_root_with_exec_form_entrypoint():
    instructions = dockerfile_instructions()
    stages = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    args = dict(instructions[stages[-1] :])

    assert len(stages) == 2
    assert instructions[stages[0]][1].startswith("python:3.11-slim AS ")
    assert args["FROM"] == "python:3.11-slim"
    assert json.loads(args["ENTRYPOINT"]) == ["sidecache", "run"]
    assert json.loads(args["CMD"]) == ["--config", "/etc/sidecache/config.yaml"]
    assert args["USER"].split(":")[0] not in ("0", "root")
    assert args["EXPOSE"].split() == ["8080", "9090"]
    assert "/healthz" in args["HEALTHCHECK"] and "CMD [" in args["HEALTHCHECK"]


# --- Kubernetes manifests ---------------------------------------------------------------------


def test_manifests_validate_against_the_pinned_kubernetes_version():
    skipped = []
    for doc in manifests():
        if doc["apiVersion"].startswith(CRD_GROUPS):
            skipped.append(doc["kind"])
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)

    assert skipped == ["ServiceMonitor"]


def test_kustomization_lists_manifests_that_exist():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())

    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).is_file(), resource


def test_configmap_config_passes_check_config_and_matches_shipped_routes(tmp_path):
    path = configmap_config(tmp_path)

    result = subprocess.run(
        [str(BIN / "sidecache"), "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    assert load_config(path).routes == load_config(ROOT / "config.yaml").routes


def test_sidecar_is_native_and_probed_on_the_admin_port(tmp_path):
    config = load_config(configmap_config(tmp_path))
    container = sidecar()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    assert container["restartPolicy"] == "Always"
    assert ports == {"proxy": config.server.port, "admin": config.server.admin_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["securityContext"]["runAsUser"] != 0


def test_grace_period_covers_the_drain(tmp_path):
    server = load_config(configmap_config(tmp_path)).server
    pod = manifest("Deployment", "agent-service")["spec"]["template"]["spec"]
    agent = next(c for c in pod["containers"] if c["name"] == "agent")
    pre_stop = agent["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = server.drain_delay + server.drain_timeout

    # The agent outlives sidecache's drain, and the pod's grace period outlives both.
    assert pre_stop >= drain
    assert pod["terminationGracePeriodSeconds"] > pre_stop + server.drain_delay


def test_secrets_are_referenced_not_inlined():
    env = {e["name"]: e for e in sidecar()["env"]}
    secret = manifest("Secret", "sidecache-secrets")

    for name, key in (
        ("SIDECACHE_ADMIN_TOKEN", "admin-token"),
        ("REDIS_PASSWORD", "redis-password"),
    ):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "sidecache-secrets", "key": key}
        assert key in secret["stringData"]
    assert "$(REDIS_PASSWORD)" in env["REDIS_URL"]["value"]


def test_service_targets_the_proxy_port_and_prometheus_finds_the_admin_port(tmp_path):
    config = load_config(configmap_config(tmp_path))
    deployment = manifest("Deployment", "agent-service")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = manifest("Service", "agent-service")

    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["proxy"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(config.server.admin_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_servicemonitor_selects_the_admin_service():
    # A custom resource, so no schema validates it: check what it must point at.
    monitor = manifest("ServiceMonitor", "agent-service-sidecache")
    admin = manifest("Service", "agent-service-sidecache")
    selector = monitor["spec"]["selector"]["matchLabels"]

    assert selector.items() <= admin["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [
        p["name"] for p in admin["spec"]["ports"]
    ]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


# --- Grafana ----------------------------------------------------------------------------------


def exported_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum"))
        else:
            names.add(family.name)
    return names


def test_grafana_dashboard_queries_only_exported_metrics():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "sidecache.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"sidecache_[a-z_]+", expr)}

    assert exprs
    assert used <= exported_names(), used - exported_names()
    assert {"sidecache_request_duration_seconds_bucket", "sidecache_health_score"} <= used


# --- the image's installation -----------------------------------------------------------------


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until_answers(url: str, process: subprocess.Popen[bytes], deadline: float) -> bytes:
    while time.monotonic() < deadline:
        try:
            status, body = get(url)
        except OSError:
            status, body = 0, b""
        if status == 200:
            return body
        # Pace the polling on the one event that ends it early: the process exiting.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.1)
            raise AssertionError("sidecache exited before answering")
    raise AssertionError(f"{url} did not answer in time")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_wheel_installs_into_a_fresh_venv_and_serves(tmp_path):
    """The Dockerfile's steps: build the wheel, install it (with the ``fast`` extra) into a
    new virtualenv, check the config, run ``sidecache run`` and ask ``/healthz``."""
    # The files the Dockerfile copies into its build stage, built outside the work tree.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("core", "proxy"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        check=True,
        timeout=120,
    )
    (wheel,) = wheels.glob("sidecache-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[fast]"], check=True, timeout=150
    )
    installed = venv / "bin" / "sidecache"
    config = ROOT / "config.yaml"

    checked = subprocess.run(
        [str(installed), "check-config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stderr

    # The shipped config, listening on loopback only and without the drain pause on SIGTERM.
    settings = yaml.safe_load(config.read_text())
    settings["server"].update(host="127.0.0.1", admin_host="127.0.0.1", drain_delay="0s")
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump(settings))
    port, admin_port = free_port(), free_port()
    env = {**os.environ, "SIDECACHE_UPSTREAM": f"http://127.0.0.1:{free_port()}", "REDIS_URL": ""}
    process = subprocess.Popen(
        [
            str(installed),
            "run",
            "--config",
            str(local),
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
        ],
        cwd=tmp_path,  # not the source tree: only the installed package may be imported
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        admin = f"http://127.0.0.1:{admin_port}"
        body = wait_until_answers(f"{admin}/healthz", process, time.monotonic() + 30)
        assert json.loads(body) == {"status": "ok"}
        status, page = get(f"{admin}/")  # package data shipped in the wheel
        assert status == 200 and b"<title>sidecache</title>" in page
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stderr.decode().splitlines()]  # logs are JSON lines
    # (A loaded machine may make the monitor's alert the first line: find the startup one.)
    started = next(line for line in lines if "listening on" in line["message"])
    assert started["level"] == "INFO" and started["logger"]
