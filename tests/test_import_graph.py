"""Every import arrow between faceverify's modules points one way: no circle, counting the imports
inside functions too (a lazy import defers a circle, it does not remove it), and never up the
layers of docs/architecture.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_names(root: Path = REPO) -> dict[str, tuple[Path, bool]]:
    """faceverify's modules: dotted name -> (file, is a package's __init__)."""
    found = {}
    for path in sorted((root / "faceverify").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """module -> the faceverify modules it imports anywhere in its source (top level or in a function).
    ``from package import name`` counts as importing the submodule when ``name`` is one."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = name.split(".") if is_package else name.split(".")[:-1]
                    parent = parent[: len(parent) - (node.level - 1)]
                    base = ".".join(parent + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # faceverify.x.attr -> faceverify.x; numpy -> ""
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle_through_a_lazy_import(tmp_path):
    package = tmp_path / "faceverify"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import x\n")
    (package / "b.py").write_text("def x():\n    from . import c\n")
    (package / "c.py").write_text("import faceverify.a\n")
    (package / "d.py").write_text("from faceverify import a\n")
    graph = import_graph(tmp_path)
    assert graph["faceverify.b"] == {"faceverify.c"} and graph["faceverify.d"] == {"faceverify.a"}
    assert circles(graph) == [["faceverify.a", "faceverify.b", "faceverify.c"]]


def test_faceverify_has_no_import_circle():
    graph = import_graph()
    assert len(graph) > 50 and "faceverify.loaders" in graph["faceverify.verify"]
    assert circles(graph) == []


def test_the_model_resolver_imports_no_loader():
    """Resolving a spec is file-system work: models.py reaches no embedder, torch, cv2 or dlib."""
    graph = import_graph()
    assert graph["faceverify.models"] <= {"faceverify.errors", "faceverify.paths"}
    source = (REPO / "faceverify" / "models.py").read_text()
    for heavy in ("torch", "cv2", "dlib", "onnxruntime"):
        assert f"import {heavy}" not in source, heavy


def documented_layers(text: str) -> dict[str, int]:
    """docs/architecture.md's layer table: top-level module or package of faceverify -> its layer."""
    table = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = {}
    for number, modules in re.findall(r"^\| (\d) [^|]*\| ([^|]*) \|", table, re.M):
        for name in re.findall(r"`([\w/]+)`", modules):
            layers[name.rstrip("/")] = int(number)
    return layers


def top_level(module: str) -> str:
    """faceverify.gallery.core -> gallery; the package itself -> __init__."""
    return module.split(".")[1] if "." in module else "__init__"


def upward_imports(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets if layers[top_level(t)] > layers[top_level(m)])


def test_the_checker_finds_an_import_up_the_layers():
    graph = {"faceverify.align": {"faceverify.errors"}, "faceverify.errors": {"faceverify.verify"}, "faceverify.verify": set()}
    assert upward_imports(graph, {"errors": 0, "align": 1, "verify": 4}) == ["faceverify.errors -> faceverify.verify"]


def test_imports_point_down_the_documented_layers():
    """Every module is in a layer of docs/architecture.md, and imports nothing from a layer above."""
    layers = documented_layers((REPO / "docs" / "architecture.md").read_text())
    graph = import_graph()
    assert set(layers.values()) == set(range(6)) and len(layers) > 30
    unplaced = sorted({top_level(m) for m in graph} - set(layers))
    assert not unplaced, f"{unplaced}: give each its layer in docs/architecture.md"
    stale = sorted(set(layers) - {top_level(m) for m in graph})
    assert not stale, f"{stale}: in the layer table, but no such module"
    assert not upward_imports(graph, layers)
