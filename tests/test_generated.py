"""The committed generated code is exactly what `make proto` writes from protos/ today."""

from __future__ import annotations

import filecmp
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
