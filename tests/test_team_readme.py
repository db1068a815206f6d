"""The README's team code, as it stands there: a layer of its own, the caller's identity in a sync handler, and
the team's tests on service.testing's fixtures, run by pytest in a folder of the team's, as a team runs them."""

from __future__ import annotations

import re
from pathlib import Path

from .processes import BIN, clean_env, run

ROOT = Path(__file__).resolve().parent.parent


def _python_block(first_line: str) -> str:
    """The Python block of the README or docs/own-service.md that starts with ``first_line``."""
    blocks = re.findall(
        r"^ *```python\n(.*?)^ *```$",
        (ROOT / "README.md").read_text() + (ROOT / "docs" / "own-service.md").read_text(),
        flags=re.MULTILINE | re.DOTALL,
    )
    [block] = [b for b in blocks if b.lstrip().startswith(first_line)]
    return block


def test_the_readmes_layer_caller_and_tests_pass_as_a_team_runs_them(tmp_path: Path) -> None:
    package = tmp_path / "greeter"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "audited.py").write_text(_python_block("# greeter/audited.py"))
    (tmp_path / "conftest.py").write_text(_python_block("# conftest.py"))
    (tmp_path / "test_greeter.py").write_text(_python_block("# test_greeter.py"))
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    command = [str(BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    result = run(command, clean_env(PYTHONPATH=tmp_path), 120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 passed" in result.stdout, result.stdout
