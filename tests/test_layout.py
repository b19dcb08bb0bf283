"""The package layout stays true (docs/architecture.md): walks grex/ with ``ast`` and fails
on an import cycle, or on an import that runs against the pipeline's direction.

    cli -> ops -> pipeline -> stages (ingest, extract, search, export) -> store
        -> models / config / errors

Every import counts, at module level or inside a function (a lazy import that closes a
cycle is still a cycle), except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "grex"

STAGES = {"ingest", "extract", "search", "export"}
# what each part of grex may import (besides itself); a stage's package may be imported
# only by its public name (``from grex.search import search``), never a module inside it
ALLOWED: dict[str, set[str]] = {
    "base": set(),  # config, errors, models
    "store": {"base"},
    "ingest": {"base", "store"},
    "extract": {"base", "store", "ingest"},
    "search": {"base", "store", "ingest", "extract"},
    "export": {"base", "store", "ingest", "extract", "search"},
    "pipeline": {"base", "store", *STAGES},
    "ops": {"base", "store", "pipeline", *STAGES},
    "cli": {"base", "store", "pipeline", "ops", *STAGES},
    "launch": {"base", "cli", "search"},
    "top": {"base", "launch"},  # grex/__init__, grex/__main__
}
BASE = {"config", "errors", "models", "paths"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """The layer a grex module belongs to."""
    parts = module.split(".")
    if len(parts) == 1:
        return "top"
    head = parts[1]
    if head in BASE:
        return "base"
    if head == "__main__":
        return "top"
    return head


def is_module(module: str) -> bool:
    rel = ROOT.parent.joinpath(*module.split("."))
    return rel.with_suffix(".py").exists() or (rel / "__init__.py").exists()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            for sub in node.body:
                skip.update(id(n) for n in ast.walk(sub))
    return skip


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported grex module) for every import that runs; ``from grex.x import y``
    names the module ``grex.x.y`` when y is a module, else ``grex.x``."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "grex":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "grex":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield node.lineno, full if is_module(full) else base


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def violations() -> list[str]:
    found: list[str] = []
    for me, path in all_modules().items():
        mine = part_of(me)
        for line, target in imports_of(path):
            theirs = part_of(target)
            where = f"{path.relative_to(ROOT.parent)}:{line}: {me} imports {target}"
            if theirs == mine or theirs == "top" and target == "grex":
                continue
            if theirs not in ALLOWED[mine]:
                found.append(f"{where} ({mine} may not import {theirs})")
            elif theirs in STAGES | {"store", "ops"} and target != f"grex.{theirs}":
                found.append(f"{where} (only grex.{theirs}'s public names, not its modules)")
    return found


def import_cycles() -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    modules = all_modules()
    for me, path in modules.items():
        graph[me] = {t for _, t in imports_of(path) if t in modules and t != me}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:  # iterative enough: grex's depth is tiny
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_imports_run_one_way() -> None:
    assert violations() == []


def test_no_import_cycles() -> None:
    assert import_cycles() == []


def test_no_module_over_about_600_lines() -> None:
    """About 600: the longest, search/postings.py (662), is one engine over shared array
    helpers; 700 is the line past which a module must be split."""
    long = {module_name(p): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 700}
    assert long == {}


def test_each_package_says_what_it_takes_and_gives() -> None:
    for init in ROOT.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 80, f"{init} has no docstring worth the name"


@pytest.mark.parametrize("where, source, rule", [
    ("export", "from grex.search.index import run_index\n", "public names"),
    ("store", "from grex.cli import app\n", "may not import"),
    ("store", "def f():\n    from grex import ingest\n", "may not import"),
])
def test_the_rules_catch_a_bad_import(where: str, source: str, rule: str) -> None:
    """The checker itself fails on what it is meant to catch: a stage that imports another
    stage's internals, the store importing the CLI or a stage."""
    bad = ROOT / where / "_layout_probe.py"
    bad.write_text(source, encoding="utf-8")
    try:
        assert any(rule in v and "_layout_probe" in v for v in violations())
    finally:
        bad.unlink()


def test_the_cycle_check_finds_a_cycle() -> None:
    a, b = ROOT / "_probe_a.py", ROOT / "_probe_b.py"
    a.write_text("def f():\n    from grex import _probe_b\n", encoding="utf-8")
    b.write_text("import grex._probe_a\n", encoding="utf-8")
    try:
        assert any("grex._probe_a" in c and "grex._probe_b" in c for c in import_cycles())
    finally:
        a.unlink()
        b.unlink()
