"""buf lints the proto and proves it wire-compatible with the seed article's (npm @bufbuild/buf, via make tools)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .processes import clean_env, run

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "tools" / "node_modules" / ".bin" / "buf"
SEED_PROTO = ROOT / "tests" / "seed" / "helloworld.proto"
OUR_PROTO = ROOT / "protos" / "rpc_package" / "helloworld.proto"


def buf(*args: str | Path, cwd: Path = ROOT) -> tuple[int, str]:
    result = run([str(BUF), *map(str, args)], clean_env(), 60, cwd)
    return result.returncode, result.stdout + result.stderr


def _module(directory: Path, proto_text: str) -> Path:
    (directory / "rpc_package").mkdir(parents=True)
    (directory / "rpc_package" / "helloworld.proto").write_text(proto_text)
    return directory


def test_lint_passes() -> None:
    assert buf("lint") == (0, "")


def test_no_wire_breaking_change_against_the_seed(tmp_path: Path) -> None:
    seed = _module(tmp_path / "seed", SEED_PROTO.read_text())
    assert buf("breaking", "protos", "--against", seed) == (0, "")


def test_breaking_check_catches_a_renumbered_field(tmp_path: Path) -> None:
    # The check above could pass vacuously; this shows buf reports a real break.
    ours = _module(tmp_path / "ours", OUR_PROTO.read_text().replace("string name = 1;", "string name = 7;", 1))
    shutil.copy(ROOT / "buf.yaml", ours / "buf.yaml")
    (ours / "buf.yaml").write_text((ours / "buf.yaml").read_text().replace("path: protos", "path: ."))
    seed = _module(tmp_path / "seed", SEED_PROTO.read_text())
    code, output = buf("breaking", ours, "--against", seed)
    assert code != 0
    assert "HelloRequest" in output
