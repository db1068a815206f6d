"""The image deploy/Dockerfile builds (make image), run as deploy/k8s runs the pod: its user, a read-only root,
no capabilities, the rendered ConfigMap and Secret volumes, loopback ports only; then called, probed, given
a new token and stopped the way the kubelet does it."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Pki, secret
from .manifests import ROOT, container, objects, pod_spec, settings_env
from .processes import BIN, ServerProcess, clean_env, run
from .test_grpcurl import GRPCURL, tls_args

# The first test builds the image (and, on a fresh machine, its Debian base: about two minutes).
pytestmark = pytest.mark.timeout(900)

# One tag per checkout, so checkouts sharing a machine's image store never run each other's image.
IMAGE = "localhost/hello-grpc-service:test-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
PODMAN_ENV = clean_env(CONTAINERS_CONF=str(ROOT / "deploy" / "podman" / "containers.conf"))
SAY_HELLO = "rpc_package.HelloWorldService/SayHello"
NEVER_LOGGED = "image-test-name"  # the request's name: a log line that holds it logged the payload
SOURCES = "import glob; print(''.join(open(f).read() for f in glob.glob('/etc/apt/sources.list*') if f[-1] != 'd'))"


def podman(*args: str, timeout: float = 60) -> str:
    result = run(["podman", *args], PODMAN_ENV, timeout)
    assert result.returncode == 0, f"podman {args[0]}: {result.stderr}"
    return result.stdout


def grpcurl(*args: str | Path) -> tuple[int, str, str]:
    result = run([str(GRPCURL), *map(str, args)], clean_env(), 15)
    return result.returncode, result.stdout, result.stderr


def health(port: int) -> str:
    """The server's status as the kubelet's grpc probe sees it: plaintext, no token (our CLI asks)."""
    command = [str(BIN / "hello-client"), "--plaintext", "--target", f"127.0.0.1:{port}", "--timeout", "5", "health"]
    result = run(command, clean_env(), 15)
    return result.stdout.strip() or result.stderr


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """make image, tagged for this checkout: the base is made only on a machine that lacks it."""
    env = {k: v for k, v in clean_env().items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = run(["make", "--no-print-directory", "-C", str(ROOT), "image", f"IMAGE={IMAGE}"], env, 840)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    yield IMAGE
    # The tag goes (the image too, unless another tag names it): clones in new folders, as CI makes,
    # would otherwise leave an image each. The base and the build stage's layers stay as the cache.
    podman("rmi", IMAGE)


class SecretVolume:
    """A directory laid out as the kubelet writes a Secret volume: each file a symlink into ``..data``,
    itself a symlink to a timestamped directory; an update writes a new one and swaps ``..data`` atomically."""

    def __init__(self, path: Path, mode: int, group: int) -> None:
        self.path, self._mode, self._group, self._versions = path, mode, group, 0
        path.mkdir()
        path.chmod(0o755)

    def write(self, files: dict[str, bytes]) -> None:
        self._versions += 1
        version = self.path / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self._versions}"
        version.mkdir(mode=0o755)
        for name, data in files.items():
            (version / name).write_bytes(data)
            os.chown(version / name, 0, self._group)  # root-owned, readable by fsGroup: the kubelet's way
            (version / name).chmod(self._mode)
        data_link = self.path / "..data"
        old = os.readlink(data_link) if data_link.is_symlink() else None
        (self.path / "..data_tmp").symlink_to(version.name)
        os.replace(self.path / "..data_tmp", data_link)
        for name in files:
            if not (self.path / name).is_symlink():
                (self.path / name).symlink_to(f"..data/{name}")
        if old:
            shutil.rmtree(self.path / old)


def secret_files(pki: Pki) -> dict[str, dict[str, bytes]]:
    """The Secrets `make k8s-secrets` creates from certs/, by name and key."""
    return {
        "hello-tls": {
            "tls.crt": pki.server.read_bytes(),
            "tls.key": pki.server_key.read_bytes(),
            "ca.crt": pki.ca.read_bytes(),
        },
        "hello-tokens": {"tokens": pki.token_file.read_bytes()},
    }


def _quantity(value: str) -> str:
    """A Kubernetes CPU or memory limit as podman spells it (500m CPU -> 0.5; 256Mi -> 256m)."""
    if value.endswith("m"):
        return str(int(value[:-1]) / 1000)
    return value.replace("Mi", "m").replace("Gi", "g")


def run_args(docs: dict[str, dict[str, Any]], volumes: dict[str, SecretVolume]) -> list[str]:
    """podman run's options for what the rendered Deployment asks of its container."""
    pod, spec = pod_spec(docs), container(docs)
    context = {**pod["securityContext"], **spec["securityContext"]}  # the container's fields win, as in Kubernetes
    args = ["--pull=never", f"--user={context['runAsUser']}:{context['runAsGroup']}"]
    args.append(f"--group-add={pod['securityContext']['fsGroup']}")
    if context["readOnlyRootFilesystem"]:
        # Kubernetes mounts no tmpfs over /tmp or /run, as podman would by default.
        args += ["--read-only", "--read-only-tmpfs=false"]
    args += [f"--cap-drop={capability}" for capability in context["capabilities"]["drop"]]
    if context["allowPrivilegeEscalation"] is False:
        args.append("--security-opt=no-new-privileges")
    assert context["seccompProfile"]["type"] == "RuntimeDefault"  # podman's default profile
    for source in spec.get("envFrom", []):
        args += [f"--env={k}={v}" for k, v in docs[f"ConfigMap/{source['configMapRef']['name']}"]["data"].items()]
    args += [f"--env={variable['name']}={variable['value']}" for variable in spec.get("env", [])]
    secret_of = {volume["name"]: volume["secret"]["secretName"] for volume in pod["volumes"]}
    for mount in spec["volumeMounts"]:
        access = "ro" if mount.get("readOnly") else "rw"
        args.append(f"--volume={volumes[secret_of[mount['name']]].path}:{mount['mountPath']}:{access}")
    # Only loopback: a port on every address would open the test's server to the network.
    args += [f"--publish=127.0.0.1::{port['containerPort']}/{port['protocol'].lower()}" for port in spec["ports"]]
    limits = spec["resources"]["limits"]
    args += [f"--memory={_quantity(limits['memory'])}", f"--cpus={_quantity(limits['cpu'])}"]
    # The kubelet runs no HEALTHCHECK on a timer; the tests run it (podman's timer needs systemd).
    args += [f"--stop-timeout={pod['terminationGracePeriodSeconds']}", "--health-interval=disable"]
    if "command" in spec:
        args.append(f"--entrypoint={json.dumps(spec['command'])}")
    return args


class Pod:
    """The image running in the foreground as the Deployment's container; its stdout read as JSON lines."""

    def __init__(self, image: str, docs: dict[str, dict[str, Any]], pki: Pki, directory: Path) -> None:
        self.docs, self.name = docs, f"hello-test-{os.getpid()}-{directory.name}"
        modes = {v["secret"]["secretName"]: v["secret"]["defaultMode"] for v in pod_spec(docs)["volumes"]}
        group = pod_spec(docs)["securityContext"]["fsGroup"]
        self.volumes = {name: SecretVolume(directory / name, modes[name], group) for name in modes}
        for name, files in secret_files(pki).items():
            self.volumes[name].write(files)
        command = ["podman", "run", "--rm", f"--name={self.name}", *run_args(docs, self.volumes), image]
        self.process = ServerProcess([*command, *container(docs).get("args", [])], PODMAN_ENV)
        try:
            self.process.wait_for("serving")
            published = [line.split() for line in podman("port", self.name).splitlines()]
        except BaseException:
            self.stop()  # no fixture teardown follows a failed set-up: remove the container here
            raise
        self.published = {int(inside.split("/")[0]): outside for inside, _, outside in published}
        self.ports = {
            p["name"]: int(self.published[p["containerPort"]].rpartition(":")[2]) for p in container(docs)["ports"]
        }

    def stop(self) -> None:
        run(["podman", "rm", "--force", "--ignore", "--time=0", self.name], PODMAN_ENV, 60)
        self.process.stop()


@pytest.fixture
def start_pod(
    image: str, rendered: dict[str, Path], pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Pod]]:
    """Starts the pod of an overlay; stops every one it started."""
    pods: list[Pod] = []

    def start(variant: str) -> Pod:
        pods.append(Pod(image, objects(rendered[variant]), pki, tmp_path_factory.mktemp(variant.rpartition("/")[2])))
        return pods[-1]

    yield start
    for pod in pods:
        pod.stop()


@pytest.fixture(scope="module")
def pod(image: str, rendered: dict[str, Path], pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    """The base overlay's pod: TLS and a token."""
    started = Pod(image, objects(rendered["base"]), pki, tmp_path_factory.mktemp("base"))
    yield started
    started.stop()


def test_the_image_carries_no_shell_pip_or_compiler_and_keeps_its_healthcheck(image: str) -> None:
    programs = ("sh", "bash", "dash", "cc", "gcc", "pip", "pip3")
    probe = "import glob, importlib.util, json, shutil; print(json.dumps([importlib.util.find_spec('pip') is None, "
    probe += f"glob.glob('/usr/share/python-wheels/pip-*'), [shutil.which(c) for c in {programs}]]))"
    out = podman("run", "--rm", "--pull=never", "--network=none", "--entrypoint=python3", image, "-c", probe)
    assert json.loads(out.splitlines()[-1]) == [True, [], [None] * len(programs)]
    [config] = json.loads(podman("image", "inspect", image))
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "hello-client"]  # kept: make image builds the docker format
    assert config["Size"] < 300_000_000  # 204 MB on the Debian base (129 MB of it the base)


def _make(*args: str) -> str:
    result = _make_run(*args, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def _make_variable(name: str) -> str:
    return _make(f"--eval=print-{name}: ; @echo $({name})", f"print-{name}").strip()


def test_the_base_holds_debians_security_updates_and_is_younger_than_its_age_limit(image: str) -> None:
    sources = podman("run", "--rm", "--pull=never", "--network=none", "--entrypoint=python3", image, "-c", SOURCES)
    assert " bookworm-security " in sources
    made = int(podman("image", "inspect", "--format", "{{.Created.Unix}}", _make_variable("BASE_IMAGE")))
    assert time.time() - made < int(_make_variable("BASE_MAX_AGE_DAYS")) * 86400


def test_the_base_is_made_again_at_its_age_limit_and_kept_while_younger(tmp_path: Path) -> None:
    # make base-image's own rule, with a recipe that writes a one-file tar instead of Debian's (seconds, not minutes).
    for folder, content in (("made", "made by the recipe\n"), ("aged", "an aged base\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "file").write_text(content)
    recipe = tmp_path / "recipe.sh"
    recipe.write_text(f"#!/bin/sh\nexec tar -C {tmp_path / 'made'} -c .\n")
    recipe.chmod(0o755)
    tag = f"localhost/hello-test-base:{secrets.token_hex(6)}"
    days = int(_make_variable("BASE_MAX_AGE_DAYS"))
    assert days == 7  # what the README promises
    made: list[str] = []

    def image_id(name: str) -> str:
        made.append(podman("image", "inspect", "--format", "{{.Id}}", name).strip())
        return made[-1]

    def make_base() -> tuple[bool, str]:
        out = _make("base-image", f"BASE_RECIPE={recipe}", f"BASE_IMAGE={tag}")
        return f"making {tag}" in out, image_id(tag)

    def build(steps: str, *options: str) -> str:
        (tmp_path / "Containerfile").write_text(steps)
        # No cache: a cached build would hand back the image of the same steps made at another time.
        command = ["build", "--quiet", "--no-cache", "--network=none", *options, "-f", str(tmp_path / "Containerfile")]
        made.append(podman(*command, str(tmp_path / "aged")).split()[-1])  # --quiet prints the image's id
        return made[-1]

    def base_made_days_ago(age: float) -> str:
        return build("FROM scratch\nCOPY file /file\n", f"--timestamp={int(time.time() - age * 86400)}", "-t", tag)

    try:
        assert make_base()[0]  # none yet: made
        first = made[-1]
        assert make_base() == (False, first)  # just made: kept
        young = base_made_days_ago(days - 1)
        assert make_base() == (False, young)
        old = base_made_days_ago(days + 0.1)
        # On the old base: an image a tag names, and one none does (as a build stage's cache is).
        named = build(f"FROM {tag}\nCOPY file /again\n", "-t", f"{tag}-child")
        cache = build(f"FROM {tag}\nCOPY file /cached\n")
        remade, new = make_base()
        assert remade
        assert new != old
        assert time.time() - int(podman("image", "inspect", "--format", "{{.Created.Unix}}", tag)) < 600
        exists = {image: run(["podman", "image", "exists", image], PODMAN_ENV, 30).returncode == 0 for image in made}
        # The base it replaced goes, with the untagged image on it; the tagged one stays whole.
        assert (exists[old], exists[cache], exists[named]) == (False, False, True)
    finally:
        run(["podman", "rmi", "--force", "--ignore", f"{tag}-child", *set(made)], PODMAN_ENV, 60)


def test_say_hello_over_tls_with_a_token(pod: Pod, pki: Pki) -> None:
    target = f"localhost:{pod.ports['grpc']}"
    request = json.dumps({"name": NEVER_LOGGED})
    code, out, err = grpcurl(*tls_args(pki, token=pki.token), "-d", request, target, SAY_HELLO)
    assert (code, json.loads(out or "{}")) == (0, {"message": f"Hello, {NEVER_LOGGED}!"}), err
    code, out, err = grpcurl(*tls_args(pki), "-d", request, target, SAY_HELLO)
    assert code != 0
    assert "code = Unauthenticated" in err, (code, out, err)


def test_the_health_and_metrics_ports_answer_in_plaintext(pod: Pod) -> None:
    assert health(pod.ports["health"]) == "SERVING"
    with urllib.request.urlopen(f"http://127.0.0.1:{pod.ports['metrics']}/metrics", timeout=10) as response:
        assert "hello_build_info{" in response.read().decode()


def test_only_loopback_ports_are_published(pod: Pod) -> None:
    assert sorted(pod.published) == sorted(p["containerPort"] for p in container(pod.docs)["ports"])
    assert {address.rpartition(":")[0] for address in pod.published.values()} == {"127.0.0.1"}


def test_the_process_runs_as_the_pod_spec_says(pod: Pod) -> None:
    status = podman("exec", pod.name, "python3", "-c", "print(open('/proc/1/status').read())")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    context = container(pod.docs)["securityContext"]
    assert fields["Uid"].split()[0] == str(context["runAsUser"])
    assert fields["Gid"].split()[0] == str(context["runAsGroup"])
    assert (fields["CapEff"].strip(), fields["CapBnd"].strip(), fields["NoNewPrivs"].strip()) == (
        "0" * 16,
        "0" * 16,
        "1",
    )
    assert fields["Seccomp"].strip() == "2"  # filtering: the runtime's default profile
    code = "open('/opt/hello/written', 'w')"
    result = run(["podman", "exec", pod.name, "python3", "-c", code], PODMAN_ENV, 60)
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr


def test_the_healthcheck_is_healthy(pod: Pod) -> None:
    podman("healthcheck", "run", pod.name)
    [state] = json.loads(podman("inspect", pod.name))
    assert state["State"]["Health"]["Status"] == "healthy"
    assert state["State"]["Health"]["Log"][-1]["Output"].strip() == "SERVING"


def test_a_token_added_by_swapping_the_secret_works_without_a_restart(pod: Pod, pki: Pki) -> None:
    added = secret("added-" + secrets.token_urlsafe(24))
    target = f"localhost:{pod.ports['grpc']}"

    def call(token: str) -> tuple[int, str, str]:
        return grpcurl(*tls_args(pki, token=token), "-d", '{"name": "rotation"}', target, SAY_HELLO)

    assert "code = Unauthenticated" in call(added)[2]
    pod.volumes["hello-tokens"].write({"tokens": pki.token_file.read_bytes() + f"added:{added}\n".encode()})
    # The server looks at the file at a call at least HELLO_AUTH__RELOAD_SECONDS after its last look.
    reload_seconds = float(settings_env(pod.docs)["HELLO_AUTH__RELOAD_SECONDS"])
    deadline = time.monotonic() + 2 * reload_seconds + 10
    for _ in range(200):
        code, _, err = call(added)
        if code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.25)  # pacing the calls while the reload interval runs out, not waiting for a start
    assert code == 0, err
    assert call(pki.token)[0] == 0
    reloaded = pod.process.wait_for("tokens file reloaded", 5)
    assert reloaded["tokens"] == 2
    assert [e["event"] for e in pod.process.events].count("serving") == 1  # the same process throughout
    assert pod.process.proc.poll() is None


def test_log_lines_are_json_and_hold_no_secret(pod: Pod, pki: Pki) -> None:
    target = f"localhost:{pod.ports['grpc']}"
    agent = "image-log-test"
    code, _, err = grpcurl(
        *tls_args(pki, token=pki.token), "-user-agent", agent, "-d", '{"name": "x"}', target, SAY_HELLO
    )
    assert code == 0, err
    for _ in range(50):  # this call's line, past those of earlier tests
        line = pod.process.wait_for("rpc", 10)
        if agent in line.get("user_agent", "") and line.get("method") == "/" + SAY_HELLO:
            break
    assert (line["code"], line["principal"], line["level"]) == ("OK", "dev", "info"), line
    assert [e for e in pod.process.events if e["event"] == "not json"] == []
    text = json.dumps(pod.process.events)
    for leak in (pki.token, NEVER_LOGGED, pki.server_key.read_text().splitlines()[1]):
        assert leak not in text


def test_prod_overlay_asks_for_a_client_certificate_and_a_token(start_pod: Callable[[str], Pod], pki: Pki) -> None:
    prod = start_pod("overlays/prod")
    target = f"localhost:{prod.ports['grpc']}"
    code, out, err = grpcurl(
        *tls_args(pki, token=pki.token, client_cert=True), "-d", '{"name": "mtls"}', target, SAY_HELLO
    )
    assert (code, json.loads(out or "{}")) == (0, {"message": "Hello, mtls!"}), err
    # token+mtls: the certificate does not stand in for the token.
    code, out, err = grpcurl(*tls_args(pki, client_cert=True), "-d", '{"name": "mtls"}', target, SAY_HELLO)
    assert "code = Unauthenticated" in err, (code, out, err)
    # Without a client certificate the handshake fails; grpcurl would retry it for its 10 s connect timeout.
    code, out, err = grpcurl(*tls_args(pki, token=pki.token), "-connect-timeout", "3", target, SAY_HELLO)
    assert code != 0, out
    assert "Failed to dial" in err, err
    assert prod.process.events[0]["mtls"] is True


def test_sigterm_drains_then_exits_0_within_the_grace_period(start_pod: Callable[[str], Pod]) -> None:
    dev = start_pod("overlays/dev")
    grace = pod_spec(dev.docs)["terminationGracePeriodSeconds"]
    started = time.monotonic()
    podman("kill", "--signal=TERM", dev.name)  # what the kubelet asks of the runtime
    dev.process.wait_for("draining", 10)
    # Readiness turns NOT_SERVING at once, so the pod leaves the Service's endpoints while it drains.
    assert health(dev.ports["health"]) == "NOT_SERVING"
    assert dev.process.wait(timeout=grace) == 0
    assert time.monotonic() - started < grace
    assert dev.process.wait_for("stopped", 5)["exit_code"] == 0
    assert signal.SIGTERM.name in json.dumps(dev.process.events)


TEAM_APP = ROOT / "tests" / "team_app"
TEAM_PROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "teamapp"
version = "1.0.0"
dependencies = ["hello-grpc-service", "pydantic-settings"]

[tool.hatch.build.targets.wheel]
packages = ["teamapp"]
"""


def _make_run(*args: str, timeout: float = 840) -> Any:
    env = {k: v for k, v in clean_env().items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return run(["make", "--no-print-directory", "-C", str(ROOT), *args], env, timeout)


@pytest.fixture(scope="module")
def team_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/team_app as a team ships it: its package, generated by make proto into it, built as a wheel."""
    project = tmp_path_factory.mktemp("team-project")
    package = project / "teamapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module in ("app.py", "sync_app.py"):
        shutil.copy(TEAM_APP / module, package / module)
    result = _make_run("proto", f"PROTO_DIR={TEAM_APP / 'protos'}", f"PROTO_OUT={package / 'generated'}", timeout=120)
    assert result.returncode == 0, result.stderr
    (project / "pyproject.toml").write_text(TEAM_PROJECT)
    command = [str(BIN / "python"), "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    result = run([*command, "-w", str(project / "dist"), str(project)], clean_env(), 120)
    assert result.returncode == 0, result.stderr
    return project / "dist"


@pytest.fixture(scope="module")
def team_image(image: str, team_wheels: Path) -> Iterator[str]:
    """make team-image: ours with the team's wheel added, serving its sync servicer."""
    tag = IMAGE.replace("hello-grpc-service:", "hello-team:")
    app = "APP=teamapp.sync_app:app"
    result = _make_run("team-image", f"IMAGE={image}", f"WHEELS={team_wheels}", app, f"TEAM_IMAGE={tag}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    yield tag
    podman("rmi", tag)


def test_a_teams_image_serves_its_app_on_ours(
    team_image: str, image: str, rendered: dict[str, Path], pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Run as the base overlay runs ours: its ConfigMap names no app, the image does.
    pod = Pod(team_image, objects(rendered["base"]), pki, tmp_path_factory.mktemp("team"))
    try:
        serving = next(e for e in pod.process.events if e["event"] == "serving")
        assert serving["app"] == "teamapp.sync_app:app"
        assert "inventory.v1.InventoryService" in serving["services"]
        target = f"localhost:{pod.ports['grpc']}"
        code, out, err = grpcurl(*tls_args(pki, token=pki.token), target, "list")
        assert (code, "inventory.v1.InventoryService" in out.split()) == (0, True), err
        request = json.dumps({"item": {"sku": "in-the-image"}})
        method = "inventory.v1.InventoryService/GetItem"
        code, out, err = grpcurl(*tls_args(pki, token=pki.token), "-d", request, target, method)
        assert (code, json.loads(out or "{}").get("item", {}).get("sku")) == (0, "in-the-image"), err
        assert health(pod.ports["health"]) == "SERVING"
    finally:
        pod.stop()
    [ours] = json.loads(podman("image", "inspect", image))
    [theirs] = json.loads(podman("image", "inspect", team_image))
    # Only the team's files are added: no second copy of the stack's virtualenv.
    assert 0 < theirs["Size"] - ours["Size"] < 5_000_000


def test_a_teams_image_needs_its_app_named() -> None:
    result = _make_run("team-image", "WHEELS=dist", timeout=60)
    assert result.returncode == 2
    assert "make team-image: APP=package.module:attribute is required" in result.stderr
