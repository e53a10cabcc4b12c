"""The layout of benchmarks/ (issue 23), read from the sources with ``ast``: no import cycle between its
modules, no import of another module's private (``_name``) attribute, and a core that depends on
nothing above it (families, peers, studies, report)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "benchmarks"
UPPER = ("families", "peers", "studies", "report")


def module_name(path: Path) -> str:
    """``benchmarks/core/runner.py`` -> ``benchmarks.core.runner`` (a package: its ``__init__``'s name)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    """Every module of the package by dotted name, parsed."""
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, tree: ast.Module, known: set[str]) -> list[tuple[str, str | None]]:
    """``(module, attribute)`` for every import in ``tree`` (at any depth) of a benchmarks module;
    ``attribute`` is the name imported from it, or None for a whole module."""
    is_package = PACKAGE.joinpath(*name.split(".")[1:], "__init__.py").exists()
    package = name if is_package else name.rsplit(".", 1)[0]  # what a relative import is relative to
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.split(".")[0] == "benchmarks"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "benchmarks":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, None) if sub in known else (base, alias.name))
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the benchmarks modules it imports (a package import counts as its ``__init__``)."""
    trees = modules()
    known = set(trees)
    return {name: {m for m, _ in imports(name, tree, known) if m != name} for name, tree in trees.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_layout_checks_see_the_imports():
    edges = graph()
    assert "benchmarks.core.runner" in edges["benchmarks.__main__"]
    assert "benchmarks.core.methods" in edges["benchmarks.peers.cmaes"]  # a relative import, two levels up
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_among_benchmarks_modules():
    assert find_cycle(graph()) is None


def test_no_module_imports_a_private_name_of_another():
    trees = modules()
    known = set(trees)
    bad = []
    for name, tree in trees.items():
        aliases = {}  # local name -> benchmarks module, to catch ``module._private`` too
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                for alias in node.names:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        for module, attribute in imports(name, tree, known):
            if attribute is not None and attribute.startswith("_") and module != name:
                bad.append(f"{name}: from {module} import {attribute}")
        imported = {m for m, a in imports(name, tree, known) if a is None}
        modules_here = {local for local, full in aliases.items() if any(m.endswith(full) for m in imported)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules_here:
                if node.attr.startswith("_") and not node.attr.startswith("__"):
                    bad.append(f"{name}: {node.value.id}.{node.attr}")
    assert not bad, bad


def test_core_imports_nothing_above_it():
    bad = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        if name.startswith("benchmarks.core")
        for target in targets
        if target.split(".")[1:2] and target.split(".")[1] in UPPER
    ]
    assert not bad, bad


def test_no_subpackage_imports_the_command_line():
    bad = [
        name
        for name, targets in graph().items()
        if name != "benchmarks.__main__" and "benchmarks.__main__" in targets
    ]
    assert not bad, bad
