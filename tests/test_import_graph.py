"""The package's import graph, read from the source (ast; imports inside functions count):
no cycle, and no module outside ``algorithms/`` imports a method's file (only the package, its
interfaces ``base`` and its ``registry``); no citation of a path outside the repository."""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "sdgdml"
ALGORITHMS = "sdgdml.algorithms"
ALGORITHM_INTERFACES = {ALGORITHMS, f"{ALGORITHMS}.base", f"{ALGORITHMS}.registry"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub; `from mod import obj`: mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, set(modules)) for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_init_edge(a: str, b: str) -> bool:
    """A package's ``__init__`` importing its own submodules, and they it, is how a package
    is made (``algorithms/__init__`` imports every component file), not a cycle."""
    return b.startswith(a + ".") or a.startswith(b + ".")


def test_no_import_cycle():
    graph = {m: {t for t in ts if not _is_package_init_edge(m, t)}
             for m, ts in _graph().items()}
    assert _cycles(graph) == []


def test_the_graph_sees_function_local_and_relative_imports():
    graph = _graph()
    assert "sdgdml.prototypes" in graph["sdgdml.evaluation"]       # inside a function
    assert "sdgdml.algorithms.uem_losses" in graph["sdgdml.algorithms.uem"]   # from . import x
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_outside_algorithms_imports_a_method_file():
    bad = {(m, t) for m, ts in _graph().items() if not m.startswith(ALGORITHMS)
           for t in ts if t.startswith(ALGORITHMS) and t not in ALGORITHM_INTERFACES}
    assert bad == set()


def test_no_citation_points_outside_the_repository():
    """Code and docs cite papers and docs/, never the development notes (``shared/``)."""
    files = [*PACKAGE.rglob("*.py"), *(REPO / "docs").rglob("*.md"), REPO / "README.md"]
    assert [str(f) for f in files if "shared/" in f.read_text()] == []
