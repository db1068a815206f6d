"""The README and docs/ render and run: tables are tables, links land, examples work against a real server.

Every Python block is run. A shell block is run when each of its commands is one this test can run
against a server of its own: `.venv/bin/hello-client`, `.venv/bin/grpcurl`, a `NAME=$(...)` line,
`printf`/`echo` piped into those, and a first line `[HELLO_X=value ...] make run`, which starts the
server with those settings and `config/dev.env`, as `make run` does. Other blocks (make, kubectl,
promtool) are not run. `localhost:50051` in a block means that server's address; a command
commented `# prints: TEXT` must print exactly TEXT (a trailing parenthesis is prose).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from .conftest import Pki
from .processes import BIN, ServerProcess, clean_env

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = (ROOT / "README.md", *DOCS, ROOT / "tests" / "README.md", ROOT / "tests" / "bench" / "README.md")
DEV_ENV = ROOT / "config" / "dev.env"
DEV_PORT = "50051"
LOOPBACK = "127.0.0.1"
RUNNABLE = re.compile(r"^(\.venv/bin/(hello-client|grpcurl)\b|[A-Z_]+=\$\(|(printf|echo) .*\| *\.venv/bin/)")
MAKE_RUN = re.compile(r"^((?:HELLO_\w+=\S+\s+)*)make run$")
PRINTS = re.compile(r"\s+#\s*prints:\s*(.*?)(?:\s+\(.*\))?$")


def _parser() -> MarkdownIt:
    # CommonMark with GitHub's tables: what GitHub renders a README with (less autolinks and the like).
    return MarkdownIt("commonmark").enable("table")


@dataclass(frozen=True)
class Block:
    """A fenced code block of a document."""

    document: Path
    line: int
    language: str
    text: str

    def __str__(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line} ({self.language})"


def _blocks(document: Path) -> list[Block]:
    return [
        Block(
            document, token.map[0] + 1 if token.map else 0, token.info.split()[0] if token.info else "", token.content
        )
        for token in _parser().parse(document.read_text())
        if token.type == "fence"
    ]


def _cells(row: str) -> int:
    # GitHub splits a row at every pipe not escaped with a backslash, inside code spans too.
    return len(re.split(r"(?<!\\)\|", row.strip().strip("|")))


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_table_row_is_in_a_table_of_its_width(document: Path) -> None:
    source = document.read_text().splitlines()
    tokens = _parser().parse(document.read_text())
    problems = []
    for index, token in enumerate(tokens):
        if token.type == "inline" and tokens[index - 1].type == "paragraph_open" and token.map:
            for offset, line in enumerate(token.content.splitlines()):
                if line.lstrip().startswith("|"):
                    problems.append(f"line {token.map[0] + offset + 1}: a table row outside a table: {line[:60]}")
        if token.type == "table_open" and token.map:
            rows = source[token.map[0] : token.map[1]]
            width = _cells(rows[0])
            problems += [
                f"line {token.map[0] + n + 1}: {_cells(row)} cells in a table of {width}"
                for n, row in enumerate(rows)
                if n != 1 and _cells(row) != width
            ]
    assert not problems, "\n".join(problems)


def _slug(heading: str) -> str:
    # GitHub's anchors: lower case, punctuation but - and _ dropped, spaces to -.
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(document: Path) -> set[str]:
    tokens = _parser().parse(document.read_text())
    return {_slug(tokens[i + 1].content) for i, token in enumerate(tokens) if token.type == "heading_open"}


def _links(tokens: list[Token]) -> Iterator[str]:
    for token in tokens:
        if token.type == "link_open":
            yield str(token.attrs["href"])
        yield from _links(token.children or [])


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_link_lands(document: Path) -> None:
    broken = []
    for href in _links(_parser().parse(document.read_text())):
        if re.match(r"^[a-z]+:", href):
            continue  # another site: not checked offline
        path, _, anchor = href.partition("#")
        target = (document.parent / path).resolve() if path else document
        if not target.exists():
            broken.append(f"{href}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{href}: no heading with that anchor")
    assert not broken, broken


REPOSITORY_PATH = re.compile(r"(?<![\w/.:-])((?:service|tests|deploy|config|protos|scripts|tools|docs)/[\w./-]*\w/?)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_file_named_exists(document: Path) -> None:
    # Prose and plain blocks (the layout); shell blocks name Kubernetes objects too (deploy/hello).
    texts = [
        token.content
        for token in _parser().parse(document.read_text())
        if token.type == "inline" or (token.type == "fence" and not token.info)
    ]
    named = {path for text in texts for path in REPOSITORY_PATH.findall(text)}
    # A module named alone (`test_tls.py`) is in the document's own folder.
    alone = {name for text in texts for name in re.findall(r"`([\w-]+\.py)`", text)}
    assert named | alone, "no file named: the patterns are broken"
    missing = [path for path in named if not (ROOT / path).exists()]
    missing += [name for name in alone if not (document.parent / name).exists()]
    assert sorted(missing) == []


def test_every_doc_is_linked_from_the_readme() -> None:
    linked = {
        (ROOT / href.partition("#")[0]).resolve()
        for href in _links(_parser().parse((ROOT / "README.md").read_text()))
        if href.startswith("docs/")
    }
    assert DOCS, "docs/ is gone"
    assert [doc for doc in DOCS if doc.resolve() not in linked] == []


def _table_cells(document: Path) -> list[str]:
    tokens = _parser().parse(document.read_text())
    opened = [i for i, token in enumerate(tokens) if token.type == "table_open"]
    closed = [i for i, token in enumerate(tokens) if token.type == "table_close"]
    return [t.content for a, b in zip(opened, closed, strict=True) for t in tokens[a:b] if t.type == "inline"]


def test_the_settings_tables_name_every_setting_and_no_other() -> None:
    from service.config.settings import KNOWN_VARIABLES

    cells = [*_table_cells(ROOT / "docs" / "settings.md"), *_table_cells(ROOT / "docs" / "client.md")]
    cells += _table_cells(ROOT / "docs" / "edge.md")
    documented = {name for cell in cells for name in re.findall(r"`(HELLO_[A-Z0-9_]+)`", cell)}
    # The supervisor's hand-over to its workers is no setting of anyone's.
    read = set(KNOWN_VARIABLES) - {"HELLO_WORKER_READY_FD"}
    assert (sorted(read - documented), sorted(documented - read)) == ([], [])


def test_every_make_target_in_the_table_exists() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    listed = {
        name
        for cell in _table_cells(ROOT / "docs" / "development.md")
        for name in re.findall(r"^`make ([\w-]+)`", cell)
    }
    assert listed, "the make targets table is gone"
    assert sorted(listed - targets) == []


def test_the_readme_has_a_short_table_of_contents() -> None:
    text = (ROOT / "README.md").read_text()
    contents = text[text.index("**Contents:**") :].split("\n\n")[0]
    headings = {_slug(h) for h in re.findall(r"^## (.+)$", text, flags=re.MULTILINE)}
    listed = set(re.findall(r"\]\(#([\w-]+)\)", contents))
    assert listed == headings, f"contents and ## headings differ: {sorted(listed ^ headings)}"


@dataclass
class Checkout:
    """A folder laid out as the repository after `make certs`, with a server running on it."""

    dir: Path
    port: int


def _checkout(base: Path, pki: Pki, settings: dict[str, str], started: list[ServerProcess]) -> Checkout:
    """Serve like `make run` (config/dev.env, certs/) from a folder of its own, on a free port."""
    base.mkdir()
    (base / "certs").symlink_to(pki.dir)
    (base / ".venv").symlink_to(BIN.parent)
    (base / "config").mkdir()
    (base / "config" / "dev.env").write_text(DEV_ENV.read_text())
    # 127.0.0.1, not localhost: with port 0 the port is free there, not necessarily on ::1, where
    # another server may hold it (the clients try ::1 first).
    env = clean_env(
        HELLO_HOST=LOOPBACK,
        HELLO_PORT=0,
        HELLO_HEALTH_PORT=0,
        HELLO_METRICS_PORT=0,
        HELLO_LOG__FORMAT="json",
        **settings,
    )
    server = ServerProcess([str(BIN / "hello-server"), "--env-file", "config/dev.env"], env, cwd=base)
    started.append(server)
    port = server.serving_port()
    # The server has read its settings; the client's settings in the same file now name its port.
    (base / "config" / "dev.env").write_text(DEV_ENV.read_text().replace(f"localhost:{DEV_PORT}", f"{LOOPBACK}:{port}"))
    return Checkout(base, port)


@pytest.fixture
def started() -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        server.stop()


def _check_prints(command: str) -> str:
    """``command``, made to fail unless it prints what its ``# prints:`` comment says."""
    match = PRINTS.search(command)
    if match is None:
        return command
    expected = shlex.quote(match.group(1))
    return (
        f"out=$({command[: match.start()]}) || exit $?\n"
        f'[ "$out" = {expected} ] || {{ printf "README says %s; printed %s\\n" {expected} "$out" >&2; exit 1; }}'
    )


def _commands(text: str) -> list[str]:
    """The block's commands, continuation lines joined, comments and blank lines left out."""
    joined = re.sub(r"\\\n\s*", "", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _runs(block: Block) -> bool:
    commands = _commands(block.text)
    if block.language not in ("sh", "bash", "shell") or not commands:
        return False
    if MAKE_RUN.match(commands[0]):
        commands = commands[1:]
    return bool(commands) and all(RUNNABLE.match(command) for command in commands)


def _run(script: str, checkout: Checkout) -> subprocess.CompletedProcess[str]:
    script = script.replace(f"localhost:{DEV_PORT}", f"{LOOPBACK}:{checkout.port}")
    return subprocess.run(
        ["bash", "-c", "set -eo pipefail\n" + script],
        cwd=checkout.dir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_every_python_block_runs_against_a_server(pki: Pki, tmp_path: Path, started: list[ServerProcess]) -> None:
    blocks = [block for document in DOCUMENTS for block in _blocks(document) if block.language == "python"]
    assert blocks, "the README's Python example is gone"
    checkout = _checkout(tmp_path / "checkout", pki, {}, started)
    for block in blocks:
        expected = [m.group(1) for line in block.text.splitlines() if (m := PRINTS.search(line))]
        script = tmp_path / "example.py"
        script.write_text(block.text.replace(f"localhost:{DEV_PORT}", f"{LOOPBACK}:{checkout.port}"))
        env = clean_env(PYTHONPATH=str(ROOT))
        result = subprocess.run(
            [str(BIN / "python"), str(script)], cwd=checkout.dir, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{block}: {result.stderr[-2000:]}"
        assert result.stdout.splitlines() == expected, f"{block} printed {result.stdout!r}"


def test_shell_blocks_run_against_a_server(pki: Pki, tmp_path: Path, started: list[ServerProcess]) -> None:
    checkouts: dict[str, Checkout] = {}
    ran = []
    # NAME=$(...) lines: later blocks use what earlier ones set, in docs/ too (the README's come first).
    assignments: list[str] = []
    for document in DOCUMENTS:
        for block in _blocks(document):
            if not _runs(block):
                continue
            commands = _commands(block.text)
            settings = ""
            if make_run := MAKE_RUN.match(commands[0]):
                settings, commands = make_run.group(1).strip(), commands[1:]
            if settings not in checkouts:
                values = dict(pair.split("=", 1) for pair in settings.split())
                checkouts[settings] = _checkout(tmp_path / f"checkout{len(checkouts)}", pki, values, started)
            script = "\n".join([*assignments, *(_check_prints(command) for command in commands)])
            result = _run(script, checkouts[settings])
            assert result.returncode == 0, f"{block}: exit {result.returncode}: {result.stderr[-2000:]}"
            assignments += [command for command in commands if re.match(r"^[A-Z_]+=\$\(", command)]
            ran.append(str(block))
    # Calling it (hello-client, grpcurl), mutual TLS (docs/client.md) and the methods' examples, at least.
    assert len(ran) >= 4, f"only these shell blocks ran: {ran}"
