"""deploy/: every overlay renders, validates against Kubernetes' schemas, passes checkov and hadolint,
and says what the settings model and the Dockerfile say (ports, EXPOSE, UID, probes, paths, HELLO_* names)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from service.config.settings import ENV_PREFIX, Settings

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

TEAM_DOCKERFILE = DEPLOY / "team.Dockerfile"
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
    command += ["--framework", "kubernetes", "dockerfile", "-f", str(DOCKERFILE), "-f", str(TEAM_DOCKERFILE)]
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
    # The dev overlay's two, each with its reason in the manifest; the Dockerfiles' FROM ${BASE}, and the team
    # image's HEALTHCHECK, inherited from ours (their reasons there).
    assert skipped == {"CKV_K8S_43", "CKV_K8S_15", "CKV_DOCKER_7", "CKV_DOCKER_2"}


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, TEAM_DOCKERFILE], ids=["ours", "team"])
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = run([str(TOOLS / "hadolint"), str(dockerfile)], clean_env(), 60)
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


def _base(dockerfile: Path) -> str:
    steps = instructions(dockerfile.read_text())
    [base] = [args.partition("=")[2] for keyword, args in steps if keyword == "ARG" and args.startswith("BASE=")]
    return base


def test_dockerfile_pins_its_base() -> None:
    base = _base(DOCKERFILE)
    assert re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", base), base
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            assert re.match(r"(\$\{BASE\}|\S+@sha256:[0-9a-f]{64})( |$)", args), args
    # A team's image installs into our virtualenv, whose python is the base's: the same base.
    assert _base(TEAM_DOCKERFILE) == base
    team_stages = [args for keyword, args in instructions(TEAM_DOCKERFILE.read_text()) if keyword == "FROM"]
    assert team_stages == ["${HELLO_IMAGE} AS hello", "${BASE} AS build", "${HELLO_IMAGE}"]


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


RECOMMENDED = {"name", "instance", "version", "component", "part-of", "managed-by"}
# What a selector may hold: labels that stay the same from one release to the next.
STABLE = {"app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/component"}


def _selectors(doc: dict[str, Any]) -> list[dict[str, str]]:
    """Every label selector in ``doc``: a workload's, a Service's, a PDB's, a NetworkPolicy's, spread constraints'."""
    spec = doc.get("spec", {})
    found = []
    if doc["kind"] == "Service":
        found.append(spec.get("selector", {}))
    for key in ("selector", "podSelector"):
        if isinstance(spec.get(key), dict) and "matchLabels" in spec[key]:
            found.append(spec[key]["matchLabels"])
    for constraint in spec.get("template", {}).get("spec", {}).get("topologySpreadConstraints", []):
        found.append(constraint["labelSelector"]["matchLabels"])
    return found


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_has_the_recommended_labels_and_selectors_only_stable_ones(
    rendered: dict[str, Path], variant: str
) -> None:
    from service import __version__

    docs = objects(rendered[variant])
    for key, doc in docs.items():
        labels = doc["metadata"].get("labels", {})
        assert {k.removeprefix("app.kubernetes.io/") for k in labels if k.startswith("app.kubernetes.io/")} == (
            RECOMMENDED
        ), key
        assert labels["app.kubernetes.io/version"] == __version__, key
        for selector in _selectors(doc):
            assert selector, key
            assert set(selector) <= STABLE, (key, selector)
    template = docs["Deployment/hello"]["spec"]["template"]["metadata"]["labels"]
    assert {k.removeprefix("app.kubernetes.io/") for k in template} == RECOMMENDED


def test_grpc_ports_declare_tls_not_cleartext(rendered: dict[str, Path]) -> None:
    # appProtocol says what the port speaks: the server terminates TLS, so HTTP/2 over TLS ("https"),
    # never kubernetes.io/h2c (cleartext HTTP/2), which a mesh or gateway would speak to it.
    docs = objects(rendered["base"])
    for name in ("Service/hello", "Service/hello-headless"):
        ports = {p["name"]: p.get("appProtocol") for p in docs[name]["spec"]["ports"]}
        assert ports["grpc"] == "https", name
    assert {p["name"]: p.get("appProtocol") for p in docs["Service/hello"]["spec"]["ports"]}["metrics"] == "http"


def test_the_client_label_the_networkpolicy_admits_has_a_domain_prefix(rendered: dict[str, Path]) -> None:
    policy = objects(rendered["base"])["NetworkPolicy/hello"]
    keys = [
        key
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
        for key in peer.get("podSelector", {}).get("matchLabels", {})
    ]
    assert keys
    for key in keys:
        prefix, _slash, name = key.partition("/")
        assert name, key
        assert "." in prefix, key


VALIDATE_CRDS = ROOT / "tools" / "validate-crds.mjs"
# What cert-manager writes into a Certificate's Secret (ca.crt: with a CA or Vault issuer).
CERT_MANAGER_KEYS = {"tls.crt", "tls.key", "ca.crt"}


def _certificate(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The server's Certificate (the edge's are components/edge's: tests/test_edge_deploy.py)."""
    return docs["Certificate/hello"]


def test_prods_certificate_matches_cert_managers_schema(rendered: dict[str, Path]) -> None:
    result = run(["node", str(VALIDATE_CRDS), str(rendered["overlays/prod"])], clean_env(), 60)
    # The server's, and the edge's listener and client certificates.
    assert (result.returncode, result.stdout) == (0, "3 Certificate(s) valid\n"), result.stderr


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (("algorithm: ECDSA", "algorithm: DSA"), "privateKey/algorithm must be equal to one of the allowed values"),
        (("  issuerRef:\n", "  issuer:\n"), "must have required property issuerRef"),
    ],
    ids=["unknown-algorithm", "no-issuer"],
)
def test_the_certificate_schema_check_can_fail(
    rendered: dict[str, Path], tmp_path: Path, broken: tuple[str, str], problem: str
) -> None:
    text = rendered["overlays/prod"].read_text()
    assert broken[0] in text
    (tmp_path / "broken.yaml").write_text(text.replace(*broken))
    result = run(["node", str(VALIDATE_CRDS), str(tmp_path / "broken.yaml")], clean_env(), 60)
    assert result.returncode == 1
    assert problem in result.stderr, result.stderr


def test_the_certificate_writes_exactly_the_secret_the_deployment_mounts(rendered: dict[str, Path]) -> None:
    docs = objects(rendered["overlays/prod"])
    certificate = _certificate(docs)
    deployment = docs["Deployment/hello"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
    assert certificate["spec"]["secretName"] == volumes["tls"]["secret"]["secretName"]
    assert certificate["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    # Every TLS file the settings name is in that Secret's mount, under a key cert-manager writes.
    env = settings_env(docs)
    tls_files = {Path(v) for k, v in env.items() if k.startswith("HELLO_TLS__") and k.endswith("_FILE")}
    assert {mounts[str(path.parent)] for path in tls_files} == {"tls"}
    assert {path.name for path in tls_files} == CERT_MANAGER_KEYS  # prod reads all three (mTLS: ca.crt)
    # The names clients dial, for each Service that carries the gRPC port.
    namespace = deployment["metadata"]["namespace"]
    for key, doc in docs.items():
        if doc["kind"] == "Service" and any(p["name"] == "grpc" for p in doc["spec"]["ports"]):
            name = doc["metadata"]["name"]
            assert {f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"} <= set(
                certificate["spec"]["dnsNames"]
            ), key
    assert "server auth" in certificate["spec"]["usages"]


def test_dev_has_no_certificate_it_uses_make_k8s_secrets(rendered: dict[str, Path]) -> None:
    assert not [key for key in objects(rendered["overlays/dev"]) if key.startswith("Certificate/")]


RENOVATE = ROOT / "renovate.json"
# The pip-compile options Renovate's pip-compile manager accepts in a lock's header (its
# allowedPipOptions); with any other it refuses the file. --output-file and --extra take "=value".
RENOVATE_PIP_COMPILE_OPTIONS = {"--allow-unsafe", "--generate-hashes", "--no-emit-index-url", "--strip-extras"}


def test_renovate_config_matches_renovates_schema() -> None:
    result = run([str(TOOLS / "check-jsonschema"), "--builtin-schema", "vendor.renovate", str(RENOVATE)], clean_env())
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda c: c["enabledManagers"].append("pip_compile"), "'pip_compile' is not one of"),
        (lambda c: c["lockFileMaintenance"].update(enabled="weekly"), "'weekly' is not of type 'boolean'"),
    ],
    ids=["unknown-manager", "wrong-type"],
)
def test_the_renovate_schema_check_can_fail(tmp_path: Path, change: Any, problem: str) -> None:
    config = json.loads(RENOVATE.read_text())
    change(config)
    (tmp_path / "renovate.json").write_text(json.dumps(config))
    command = [str(TOOLS / "check-jsonschema"), "--builtin-schema", "vendor.renovate", str(tmp_path / "renovate.json")]
    result = run(command, clean_env())
    assert result.returncode == 1
    assert problem in result.stdout + result.stderr


def _renovate_pattern(pattern: str) -> re.Pattern[str]:
    """A managerFilePatterns entry ("/regex/") as a Python pattern."""
    match = re.fullmatch(r"/(.+)/", pattern)
    assert match, pattern
    return re.compile(match.group(1))


def test_renovate_covers_the_base_image_digest_every_python_lock_and_the_npm_lock() -> None:
    config = json.loads(RENOVATE.read_text())
    assert {"dockerfile", "pip-compile", "npm"} <= set(config["enabledManagers"])
    assert config["lockFileMaintenance"]["enabled"] is True
    assert (ROOT / "tools" / "package-lock.json").exists()
    patterns = [_renovate_pattern(p) for p in config["pip-compile"]["managerFilePatterns"]]
    locks = sorted(ROOT.glob("requirements*.lock"))
    assert len(locks) >= 4
    for lock in locks:
        assert any(p.search(lock.name) for p in patterns), lock.name
        # Renovate re-runs the header's command: every option one it accepts, the sources there.
        header = re.search(r"^#    (pip-compile .*)$", lock.read_text(), re.MULTILINE)
        assert header, lock.name
        _command, *arguments = header.group(1).split()
        options = [a for a in arguments if a.startswith("-")]
        sources = [a for a in arguments if not a.startswith("-")]
        assert {o.split("=")[0] for o in options if "=" not in o} <= RENOVATE_PIP_COMPILE_OPTIONS, lock.name
        assert {o.split("=")[0] for o in options if "=" in o} <= {"--output-file", "--extra"}, lock.name
        assert f"--output-file={lock.name}" in options
        assert sources
        assert all((ROOT / source).exists() for source in sources), sources
    # The base image: digest updates only (a new Python is a deliberate change), both FROM lines together.
    [python_rule] = [r for r in config["packageRules"] if r.get("matchPackageNames") == ["python"]]
    assert python_rule["enabled"] is False
    assert "digest" not in python_rule["matchUpdateTypes"]
