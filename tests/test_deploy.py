"""deploy/: every overlay renders, validates against Kubernetes' schemas, passes checkov and hadolint,
and says what the settings model and the Dockerfile say (ports, EXPOSE, UID, probes, paths, HELLO_* names)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from service.settings import ENV_PREFIX, Settings

from .manifests import (
    DEPLOY,
    DOCKERFILE,
    PROBES,
    ROOT,
    VARIANTS,
    config_map,
    container,
    drift,
    instructions,
    manifest_settings,
    objects,
    pod_spec,
    settings_env,
)
from .processes import clean_env, run

TOOLS = ROOT / ".venv-deploy" / "bin"
KUBERNETES_VERSIONS = ["1.30.0", None]  # None: the newest kubernetes-validate bundles


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=["1.30", "newest"])
def test_manifests_validate_strictly(rendered: dict[str, Path], version: str | None) -> None:
    command = [str(TOOLS / "kubernetes-validate"), "--strict", "--quiet", *map(str, rendered.values())]
    if version:
        command[1:1] = ["-k", version]
    result = run(command, clean_env(), 120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_finds_nothing(rendered: dict[str, Path]) -> None:
    command = [str(TOOLS / "checkov"), "--skip-download", "--output", "json"]
    command += ["--framework", "kubernetes", "dockerfile", "-f", str(DEPLOY / "Dockerfile")]
    for path in rendered.values():
        command += ["-f", str(path)]
    result = run(command, clean_env(), 300, rendered["base"].parent)
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [check["check_id"] for report in reports for check in report["results"]["failed_checks"]]
    passed = sum(report["summary"]["passed"] for report in reports)
    assert failed == []
    assert passed > 100  # both frameworks really ran
    skipped = {c["check_id"] for report in reports for c in report["results"].get("skipped_checks", [])}
    # The dev overlay's two, each with its reason in the manifest; the Dockerfile's FROM ${BASE} (its reason there).
    assert skipped == {"CKV_K8S_43", "CKV_K8S_15", "CKV_DOCKER_7"}


def test_hadolint_finds_nothing() -> None:
    result = run([str(TOOLS / "hadolint"), str(DEPLOY / "Dockerfile")], clean_env(), 60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _env_names(model: type[BaseModel], prefix: str) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(prefix + name.upper())
    return names


@pytest.mark.parametrize("variant", VARIANTS)
def test_manifests_match_the_settings_model(rendered: dict[str, Path], variant: str) -> None:
    docs = objects(rendered[variant])
    env = settings_env(docs)
    # Every HELLO_* name is one the settings model reads, and the values parse.
    assert set(env) <= _env_names(Settings, ENV_PREFIX), set(env) - _env_names(Settings, ENV_PREFIX)
    parsed = manifest_settings(docs)
    spec = container(docs)
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert ports == {"grpc": parsed.port, "health": parsed.health_port, "metrics": parsed.metrics_port}
    for probe in PROBES:
        assert spec[probe]["grpc"]["port"] == parsed.health_port
    # Readiness asks for the whole server (""), which turns NOT_SERVING on drain whatever the app serves.
    assert "service" not in spec["readinessProbe"]["grpc"]
    assert pod_spec(docs)["terminationGracePeriodSeconds"] > parsed.drain_seconds + parsed.shutdown_grace_seconds
    # Files named in settings live in mounted Secret directories (never subPath mounts).
    mounts = {m["mountPath"]: m for m in spec["volumeMounts"]}
    assert all("subPath" not in m for m in mounts.values())
    for key, path in env.items():
        if key.endswith("_FILE"):
            assert str(Path(path).parent) in mounts, (key, path)
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in docs["Service/hello"]["spec"]["ports"]}
    assert service_ports == {"grpc": (parsed.port, "grpc"), "metrics": (parsed.metrics_port, "metrics")}
    [headless] = docs["Service/hello-headless"]["spec"]["ports"]
    assert (headless["port"], headless["targetPort"]) == (parsed.port, "grpc")


def test_prod_turns_on_mutual_tls(rendered: dict[str, Path]) -> None:
    env = settings_env(objects(rendered["overlays/prod"]))
    assert env["HELLO_TLS__CLIENT_CA_FILE"] == "/etc/hello/tls/ca.crt"
    assert env["HELLO_AUTH__MODE"] == "token+mtls"
    image = container(objects(rendered["overlays/prod"]))["image"]
    assert re.fullmatch(r"[\w./-]+@sha256:[0-9a-f]{64}", image)


def test_dockerfile_pins_its_base() -> None:
    steps = instructions(DOCKERFILE.read_text())
    [base] = [args.partition("=")[2] for keyword, args in steps if keyword == "ARG" and args.startswith("BASE=")]
    assert re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", base), base
    for keyword, args in steps:
        if keyword == "FROM":
            assert re.match(r"(\$\{BASE\}|\S+@sha256:[0-9a-f]{64})( |$)", args), args


@pytest.mark.parametrize("variant", VARIANTS)
def test_dockerfile_manifests_and_settings_agree(rendered: dict[str, Path], variant: str) -> None:
    assert drift(DOCKERFILE.read_text(), objects(rendered[variant])) == []


# Each edit makes the Dockerfile disagree with the manifests or the settings; the drift check must say so.
DOCKERFILE_DRIFTS = {
    "EXPOSE without the metrics port": ("EXPOSE 50051 8081 8082", "EXPOSE 50051 8081"),
    "another USER": ("USER 10001:10001", "USER 10002:10001"),
    "a low UID everywhere": ("USER 10001:10001", "USER 101:10001"),
    "HEALTHCHECK on another port": ('"127.0.0.1:8081"', '"127.0.0.1:8083"'),
    "HEALTHCHECK outlasting its timeout": ('"--timeout", "2"', '"--timeout", "5"'),
    "ENTRYPOINT no script": ('ENTRYPOINT ["hello-server"]', 'ENTRYPOINT ["hello_server"]'),
    "PATH without the virtualenv": ("PATH=/opt/hello/bin:", "PATH=/usr/local/bin:"),
    "ENV against the ConfigMap": ("HELLO_LOG__FORMAT=json", "HELLO_LOG__FORMAT=console"),
}


@pytest.mark.parametrize(("old", "new"), DOCKERFILE_DRIFTS.values(), ids=list(DOCKERFILE_DRIFTS))
def test_drift_in_the_dockerfile_is_caught(rendered: dict[str, Path], old: str, new: str) -> None:
    dockerfile = DOCKERFILE.read_text()
    assert old in dockerfile
    assert drift(dockerfile.replace(old, new), objects(rendered["base"])) != []


def _set(docs: dict[str, dict[str, Any]], where: str, value: object) -> None:
    """Set the value at a /-separated path in the Deployment's container (in the ConfigMap if it starts data/)."""
    *parents, leaf = where.split("/")
    target: Any = config_map(docs) if where.startswith("data/") else container(docs)
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[int(leaf) if isinstance(target, list) else leaf] = value


MANIFEST_DRIFTS = {
    "a probe on another port": ("readinessProbe/grpc/port", 8083),
    "the container as another user": ("securityContext/runAsUser", 10002),
    "a containerPort not exposed": ("ports/2/containerPort", 9090),
    "the ConfigMap moving the health port": ("data/HELLO_HEALTH_PORT", "8083"),
    "a Secret mounted elsewhere": ("volumeMounts/1/mountPath", "/etc/hello/secrets"),
    "a command the image lacks": ("command", ["/usr/local/bin/hello-server"]),
}


@pytest.mark.parametrize(("where", "value"), MANIFEST_DRIFTS.values(), ids=list(MANIFEST_DRIFTS))
def test_drift_in_the_manifests_is_caught(rendered: dict[str, Path], where: str, value: object) -> None:
    docs = objects(rendered["base"])
    assert drift(DOCKERFILE.read_text(), docs) == []
    _set(docs, where, value)
    assert drift(DOCKERFILE.read_text(), docs) != []
