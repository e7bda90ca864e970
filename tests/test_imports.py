"""The packages' layering: ``data_contracts`` is the leaf every package imports, ``vae3d`` (the
library) never imports ``flows`` or the tools of orchestration, and no module imports itself
back through others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data_contracts", "vae3d", "flows")
#: what each package may import of the others (and the orchestration libraries it must not)
ALLOWED = {"data_contracts": set(), "vae3d": {"data_contracts"}, "flows": {"data_contracts", "vae3d"}}
FORBIDDEN_LIBRARIES = {"data_contracts": {"torch", "monai", "prefect", "mlflow", "nibabel"},
                       "vae3d": {"prefect", "mlflow"}}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, top_level_only: bool) -> set[str]:
    """Absolute module names ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(name, path, top_level_only) if m in modules and m != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _is_package_init(graph_name: str) -> bool:
    return (ROOT / Path(*graph_name.split(".")) / "__init__.py").exists()


def test_packages_import_only_downwards():
    """data_contracts imports no other package; vae3d never imports flows (lazy imports included)."""
    wrong = []
    for name, path in _modules().items():
        package = name.split(".")[0]
        for imported in _imports(name, path, top_level_only=False):
            top = imported.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                wrong.append(f"{name} imports {imported}")
            if top in FORBIDDEN_LIBRARIES.get(package, ()):
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("top_level_only", [True, False], ids=["module-level", "with-lazy-imports"])
def test_no_module_imports_itself_back(top_level_only):
    """No cycle among modules (a package's ``__init__`` re-exporting its own modules aside)."""
    graph = _graph(top_level_only)
    # a package importing its submodules to re-export them is not a cycle of concepts
    graph = {v: {w for w in ws if not (_is_package_init(w) and v.startswith(w + "."))} for v, ws in graph.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_imported_package_is_declared():
    """Each third-party package the code imports is a dependency in pyproject.toml (an extra's
    package only behind a guarded import), so a plain ``pip install`` gives a working tool."""
    import re
    import sys
    from importlib.metadata import packages_distributions

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda req: re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")
    declared = {name(r) for r in project["dependencies"]}
    extras = {name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    dists = packages_distributions()
    missing = {}
    for module, path in _modules().items():
        for imported in _imports(module, path, top_level_only=False):
            top = imported.split(".")[0]
            if top in sys.stdlib_module_names or top in PACKAGES or top == "__future__":
                continue
            provided = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
            if not provided & (declared | extras):
                missing.setdefault(top, []).append(module)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
