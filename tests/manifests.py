"""deploy/ as the tests read it: rendered overlays, the objects in them, deploy/Dockerfile's instructions,
and the drift check between the Dockerfile, the manifests and the settings model."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from service.config.settings import ENV_PREFIX, Settings

from .processes import clean_env, run

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
VARIANTS = ["base", "overlays/prod", "overlays/dev"]
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def render(variant: str, out: Path) -> Path:
    """``kubectl kustomize`` of one overlay (or the base), written into ``out``."""
    result = run(["kubectl", "kustomize", str(DEPLOY / "k8s" / variant)], clean_env(), 60)
    assert result.returncode == 0, result.stderr
    path = out / (variant.replace("/", "-") + ".yaml")
    path.write_text(result.stdout)
    return path


def objects(path: Path) -> dict[str, dict[str, Any]]:
    return {doc["kind"] + "/" + doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(path.read_text()) if doc}


def pod_spec(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = docs["Deployment/hello"]["spec"]["template"]["spec"]
    return spec


def container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    only: dict[str, Any]
    [only] = pod_spec(docs)["containers"]
    return only


def config_map(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The HELLO_* ConfigMap (its name carries kustomize's hash suffix)."""
    [config] = [doc for key, doc in docs.items() if key.startswith("ConfigMap/hello-settings")]
    return config


def settings_env(docs: dict[str, dict[str, Any]]) -> dict[str, str]:
    return dict(config_map(docs)["data"])


def nested(env: dict[str, str]) -> dict[str, Any]:
    """HELLO_TLS__CERT_FILE=x -> {"tls": {"cert_file": "x"}}, as pydantic-settings reads the environment."""
    values: dict[str, Any] = {}
    for key, value in env.items():
        *parents, leaf = key.removeprefix(ENV_PREFIX).lower().split("__")
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return values


def manifest_settings(docs: dict[str, dict[str, Any]]) -> Settings:
    """The Settings the ConfigMap makes, without reading the files it names."""
    values = {k: v for k, v in settings_env(docs).items() if not k.endswith("_FILE")}
    return Settings(_env_file=None, **nested(values))  # type: ignore[call-arg]


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comments dropped, as docker reads them."""
    pairs, pending = [], ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\") + " "
        if not line.endswith("\\"):
            keyword, _, rest = pending.partition(" ")
            pairs.append((keyword.upper(), " ".join(rest.split())))
            pending = ""
    return pairs


def _healthcheck_command(args: str) -> tuple[dict[str, str], list[str]]:
    """HEALTHCHECK's --options and its exec-form command."""
    options = dict(re.findall(r"--([a-z-]+)=(\S+)", args.partition(" CMD ")[0]))
    return options, json.loads(args.partition(" CMD ")[2])


def _ids(security_context: dict[str, Any]) -> str:
    return f"{security_context.get('runAsUser')}:{security_context.get('runAsGroup')}"


def drift(dockerfile: str, docs: dict[str, dict[str, Any]]) -> list[str]:
    """What the Dockerfile, the rendered manifests and the settings model say differently; [] when they agree."""
    problems: list[str] = []
    steps = instructions(dockerfile)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    configured = manifest_settings(docs)
    pod, spec = pod_spec(docs), container(docs)

    def agree(what: str, **sources: object) -> None:
        if len({json.dumps(value, sort_keys=True) for value in sources.values()}) > 1:
            problems.append(f"{what}: " + ", ".join(f"{name} says {value}" for name, value in sources.items()))

    # Ports: what the image exposes, what the pod declares, what the server listens on by default and as configured.
    exposed = sorted(int(p.split("/")[0]) for kw, args in steps if kw == "EXPOSE" for p in args.split())
    agree(
        "ports",
        EXPOSE=exposed,
        containerPorts=sorted(p["containerPort"] for p in spec["ports"]),
        settings_defaults=sorted([defaults.port, defaults.health_port, defaults.metrics_port]),
        ConfigMap=sorted([configured.port, configured.health_port, configured.metrics_port]),
    )
    # The user: the image's USER and both securityContexts; a high UID that owns nothing in the image.
    users = [args for kw, args in steps if kw == "USER"]
    agree("UID:GID", USER=users[-1:], pod=[_ids(pod["securityContext"])], container=[_ids(spec["securityContext"])])
    if not users or int(users[-1].split(":")[0]) < 10000:
        problems.append(f"USER {users[-1:]} is not a fixed UID >= 10000")
    # Programs: the ENTRYPOINT and the HEALTHCHECK run the project's own scripts, which the image's PATH finds.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = ([[]] + [json.loads(args) for kw, args in steps if kw == "ENTRYPOINT"])[-1]
    if len(entrypoint) != 1 or entrypoint[0] not in scripts:
        problems.append(f"ENTRYPOINT {entrypoint} is not one of the project's scripts {sorted(scripts)}")
    venvs = [args.split()[-1] for kw, args in steps if kw == "COPY" and args.startswith("--from=")]
    env = " ".join(args for kw, args in steps if kw == "ENV")
    if not any(f"PATH={venv}/bin:" in env for venv in venvs):
        problems.append(f"the image's ENV ({env}) does not put the bin of what it copies in ({venvs}) first on PATH")
    if spec.get("command") not in (None, entrypoint):
        problems.append(f"the Deployment's command {spec['command']} is not the image's ENTRYPOINT")
    # Probes: the HEALTHCHECK asks the same plaintext port as the kubelet's three probes.
    checks = [args for kw, args in steps if kw == "HEALTHCHECK"]
    if len(checks) != 1:
        problems.append(f"{len(checks)} HEALTHCHECK instructions")
    else:
        options, command = _healthcheck_command(checks[0])
        target = command[command.index("--target") + 1] if "--target" in command else ""
        agree(
            "health port",
            HEALTHCHECK=target.rpartition(":")[2],
            **{probe: str(spec[probe]["grpc"]["port"]) for probe in PROBES},
            settings=str(configured.health_port),
        )
        if command[0] not in scripts or "--plaintext" not in command or "--timeout" not in command:
            problems.append(
                f"HEALTHCHECK {command} must run one of the project's scripts, in plaintext, with a timeout"
            )
        elif float(command[command.index("--timeout") + 1]) >= float(options.get("timeout", "30s").rstrip("s")):
            problems.append(f"HEALTHCHECK {command} must give up before its own --timeout={options.get('timeout')}")
    # Paths: the files the ConfigMap names live in the pod's Secret mounts.
    mounts = {m["mountPath"] for m in spec["volumeMounts"]}
    for key, path in settings_env(docs).items():
        if key.endswith("_FILE") and str(Path(path).parent) not in mounts:
            problems.append(f"{key}={path} is in no volume mount {sorted(mounts)}")
    # Settings the image sets itself must say what the ConfigMap says.
    image_env = dict(re.findall(r"(HELLO_\w+)=(\S+)", env))
    for key, value in image_env.items():
        if key in settings_env(docs) and settings_env(docs)[key] != value:
            problems.append(f"{key}: ENV says {value}, the ConfigMap says {settings_env(docs)[key]}")
    return problems
