"""The package's shape: imports point downward (no cycles), and the layers keep their order."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autocompress"

# Lowest first: a module may import only from its own layer or the layers before it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "units", "files"),
    ("settings",),
    ("quantizers",),
    ("plan",),
    ("models", "data"),
    ("compress",),
    ("pack",),
    ("engine",),
    ("pipeline",),
    ("allocation",),
    ("study",),
    ("search",),
    ("strategies",),
    ("report",),
    ("runner",),
    ("compare",),
    ("cli",),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (at any depth in the file, function bodies included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            prefix = ".".join([*base, node.module] if node.module else base) if node.level else (node.module or "")
            targets = [prefix, *(f"{prefix}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + ".") and not target.startswith(name + "."):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for neighbour in sorted(graph[node]):
            if state.get(neighbour) == 1:
                return [*path[path.index(neighbour):], neighbour]
            if neighbour not in state:
                cycle = visit(neighbour, [*path, neighbour])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [node])
            if cycle:
                return cycle
    return None


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} is in no layer of LAYERS; add it where it belongs")


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_point_downward_through_the_layers() -> None:
    upward = [f"{module} -> {target}" for module, targets in import_graph().items() if module != "autocompress"
              for target in targets if target != "autocompress" and layer_of(target) > layer_of(module)]
    assert not upward, "imports that point upward:\n" + "\n".join(sorted(upward))


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", ["autocompress.quantizers", "autocompress.units", "autocompress.files"])
def test_the_lowest_layers_import_nothing_above_them(module: str) -> None:
    graph = import_graph()
    assert all(layer_of(target) <= layer_of(module) for target in graph[module])


def _imported_after(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter has imported after running ``statement``."""
    code = f"import sys; {statement}; print(' '.join(sorted({{name.split('.')[0] for name in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(done.stdout.split())


def test_the_settings_and_presets_import_no_torch_and_no_optuna() -> None:
    imported = _imported_after("import autocompress.settings as s; s.load_settings(None, {'target_size': '50KB'})")
    assert not {"torch", "optuna", "numpy"} & imported, sorted(imported)


def test_the_allocation_algorithms_import_no_optuna() -> None:
    imported = _imported_after("import autocompress.allocation")
    assert "torch" in imported and "optuna" not in imported


@pytest.mark.parametrize("package", sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()))
def test_no_package_exports_more_than_25_names(package: str) -> None:
    exported = getattr(importlib.import_module(f"autocompress.{package}"), "__all__", [])
    assert len(exported) <= 25, f"autocompress.{package} exports {len(exported)} names"


def test_registration_is_explicit_no_module_is_imported_by_name() -> None:
    """Every edge between modules is an import statement the layering test reads: no importlib, no __import__."""
    dynamic = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
               if "importlib.import_module" in path.read_text() or "__import__(" in path.read_text()]
    assert dynamic == ["models/_registry.py"], dynamic  # a user's own model, named package.module:factory


def test_search_offers_every_strategy_but_the_naive_baselines_of_compare() -> None:
    from autocompress.strategies import get_strategy, strategy_names

    offered = set(strategy_names(searchable=True))
    assert offered == {"bo", "random", "admm", "bayesbits", "uniform", "projection"}
    assert {name for name in strategy_names() if not get_strategy(name).offered_by_search} == {
        "prune-then-quantize", "quantize-then-prune"}
