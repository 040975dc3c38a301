"""The project's import graph: no circle among its modules, and the library never imports a driver layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# installed package name -> its folder in the checkout (pyproject's package-dir)
PACKAGES = {"revtaf": "revtaf", "revtaf_train": "train", "revtaf_app": "app", "revtaf_bench": "bench", "revtaf_cli": "cli"}
DRIVERS = ("revtaf_train", "revtaf_app", "revtaf_bench", "revtaf_cli")


def _module_name(package: str, path: Path) -> str:
    parts = [package, *path.relative_to(REPO / PACKAGES[package]).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> project modules it imports anywhere in its body (function-level imports count too)."""
    modules = {_module_name(pkg, p): p for pkg, folder in PACKAGES.items() if (REPO / folder).is_dir()
               for p in (REPO / folder).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                found = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for target in found:
                while target and target not in modules:  # "revtaf.data.read_image" -> "revtaf.data"
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _package_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a.split(".")[0], b.split(".")[0]) for a, targets in graph.items() for b in targets
            if a.split(".")[0] != b.split(".")[0]}


def test_no_import_circle_among_modules():
    # package __init__ re-exports are edges into their own submodules, not design circles: drop them
    graph = {m: {t for t in ts if not m.startswith(t + ".") and not t.startswith(m + ".")}
             for m, ts in import_graph().items()}
    assert _cycles(graph) == []


def test_library_imports_no_driver_and_layers_point_one_way():
    edges = _package_edges(import_graph())
    assert not {(a, b) for a, b in edges if a == "revtaf" and b in DRIVERS}
    assert not {(a, b) for a, b in edges if (b, a) in edges}, "two layers import each other"
    # training and QA are siblings under the command line: neither imports the other, nothing imports the CLI
    assert not {(a, b) for a, b in edges if {a, b} == {"revtaf_train", "revtaf_bench"}}
    assert not {(a, b) for a, b in edges if b == "revtaf_cli"}


def test_no_generic_top_level_package_is_installed():
    """pyproject installs the drivers under revtaf_* names: `pip install` puts no `app` or `train` into
    site-packages, and the package-dir mapping matches the folders this test walks."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    top_level = {name.split(".")[0] for name in config["packages"]}
    assert top_level == set(PACKAGES) and all(name.startswith("revtaf") for name in top_level)
    code_dirs = {k: v for k, v in config["package-dir"].items() if k != "revtaf.assets"}  # the bundled model's data
    assert code_dirs == {k: v for k, v in PACKAGES.items() if k != v}


def test_the_checker_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
