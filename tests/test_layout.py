"""The package's shape holds: no import points up the layers of folders, and the public face resolves."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import service

PACKAGE = Path(service.__file__).parent
# Bottom to top: a module imports from its own folder or from a lower line, never from its own line or above.
LEVELS = (
    ("service", "service.errors", "service.status_details", "service.generated", "service.identity"),
    ("service.config",),
    ("service.registry",),
    ("service.security", "service.observability"),
    ("service.layers", "service.hello", "service.client"),
    ("service.server", "service.edge"),
    ("service.cli", "service.testing"),
    ("service.__main__", "service.pytest_plugin"),
)
FACE = "service"  # service/__init__.py imports from every folder, lazily: it is the public face


def _unit(module: str) -> tuple[int, str]:
    """The level and the folder (or top-level module) ``module`` belongs to."""
    for level, units in enumerate(LEVELS):
        for unit in sorted(units, key=len, reverse=True):
            if unit != "service" and (module == unit or module.startswith(f"{unit}.")):
                return level, unit
    assert module == "service", f"{module} is on no level of LEVELS"
    return 0, "service"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for each import of a ``service`` module in ``path``; ``from . import x`` names the module x."""
    package = list(path.relative_to(PACKAGE.parent).parts[:-1])
    found = []
    tree = ast.parse(path.read_text())
    # Names imported for annotations alone (under `if TYPE_CHECKING:`) make no arrow at run time: the
    # registry may name the Layer type its add_layer takes without importing the layers.
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "service"]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            if module.split(".")[0] != "service":
                continue
            for alias in node.names:
                sub = PACKAGE.parent / module.replace(".", "/") / alias.name
                is_module = sub.is_dir() or sub.with_suffix(".py").exists()
                found.append((node.lineno, f"{module}.{alias.name}" if is_module else module))
    return found


def test_no_import_points_up() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "generated" in path.parts or path == PACKAGE / "__init__.py":
            continue
        own = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        own_level, own_unit = _unit(own)
        for line, imported in _imports(path):
            level, unit = _unit(imported)
            if unit != own_unit and (level > own_level or (level == own_level and unit != "service")):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {own_unit} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_public_face_names_what_it_exports() -> None:
    # __all__, the lazy map and the imports type checkers read name the same things.
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    typed = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for child in node.body
        if isinstance(child, ast.ImportFrom)
        for alias in child.names
    }
    assert sorted(service.__all__) == sorted({"__version__", *service._MODULE}) == sorted({"__version__", *typed})
    for name in service.__all__:
        value = getattr(service, name)
        if name != "__version__":
            assert value is getattr(sys.modules[f"service{service._MODULE[name]}"], name), name
    with_star: dict[str, object] = {}
    exec("from service import *", with_star)  # noqa: S102 - the names a star import brings
    assert set(with_star) - {"__builtins__"} == set(service.__all__)


def test_importing_the_package_stays_light() -> None:
    # The CLI and the workers' supervisor import the package first: no grpc, no pydantic until a name is used.
    script = "import sys, service; print(sorted({m.split('.')[0] for m in sys.modules} & {'grpc', 'pydantic'}))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_the_server_imports_the_hello_app_only_to_serve_it() -> None:
    # A team's app is served without ours: the factory and the lifecycle import no Hello.
    script = "import sys, service.server.lifecycle; print('service.hello' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"
