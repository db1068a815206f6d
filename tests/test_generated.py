"""The committed generated code is exactly what `make proto` writes from protos/ today."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

from .processes import clean_env, run

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "service" / "generated"


def _files(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in directory.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    result = run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(out)], clean_env(), 60)
    assert result.returncode == 0, result.stderr
    fresh, committed = _files(out), _files(COMMITTED)
    assert sorted(fresh) == sorted(committed), "run `make proto`: the set of generated files changed"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run `make proto`: {stale} differ from what protos/ generates"
    assert not filecmp.dircmp(out, COMMITTED).diff_files


def test_generated_code_uses_relative_imports() -> None:
    grpc_module = (COMMITTED / "rpc_package" / "helloworld_pb2_grpc.py").read_text()
    assert "from . import helloworld_pb2" in grpc_module
    assert "from rpc_package import" not in grpc_module


def _make_proto(protos: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = ["make", "--no-print-directory", "-C", str(ROOT), "proto", f"PROTO_DIR={protos}", f"PROTO_OUT={out}"]
    return run(command, clean_env(), 120)


def test_make_proto_into_a_teams_package_keeps_what_is_there(tmp_path: Path) -> None:
    protos, package = tmp_path / "protos", tmp_path / "orders"
    for name in ("orders", "legacy"):
        (protos / name / "v1").mkdir(parents=True)
        (protos / name / "v1" / f"{name}.proto").write_text(f'syntax = "proto3";\npackage {name}.v1;\nmessage M {{}}\n')
    package.mkdir()
    (package / "__init__.py").write_text('"""The orders team\'s package."""\n')
    (package / "app.py").write_text("def register(server): ...\n")
    result = _make_proto(protos, package)
    assert result.returncode == 0, result.stderr
    assert (package / "orders" / "v1" / "orders_pb2.py").is_file()
    assert (package / "legacy" / "v1" / "legacy_pb2.py").is_file()
    # A proto deleted: what it generated goes, and nothing of the team's.
    shutil.rmtree(protos / "legacy")
    result = _make_proto(protos, package)
    assert result.returncode == 0, result.stderr
    assert not (package / "legacy").exists()
    assert (package / "orders" / "v1" / "orders_pb2_grpc.py").is_file()
    assert (package / "app.py").read_text() == "def register(server): ...\n"
    assert (package / "__init__.py").read_text() == '"""The orders team\'s package."""\n'
    # A module of the team's where a generated one would go is an error, and stays as it is.
    (package / "orders" / "v1" / "orders_pb2.py").write_text("# hand-written\n")
    result = _make_proto(protos, package)
    assert result.returncode != 0
    assert "orders_pb2.py is not generated code: not overwritten" in result.stderr
    assert (package / "orders" / "v1" / "orders_pb2.py").read_text() == "# hand-written\n"
