"""The package's layers, checked: every import (function-level ones too) runs downward.

The layers, top to bottom, are documented in docs/architecture.md.  A module may import
from its own layer or any layer below it; an import that runs up, or a cycle between
modules, fails here with the offending file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segeval"

# Lowest first.  A module's layer is the longest prefix listed here.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("segeval.errors", "segeval.version", "segeval.words"),
    ("segeval.config",),
    ("segeval.core",),
    ("segeval.formats",),
    ("segeval.engines",),
    ("segeval.losses",),
    ("segeval.results",),
    ("segeval.run",),
    ("segeval.api",),
    ("segeval.verdicts",),
    ("segeval.outputs",),
    ("segeval.commands",),
    ("segeval", "segeval.__main__"),
)


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return rank


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every ``segeval`` import in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module != "segeval" and not node.module.startswith("segeval."):
                continue
            for alias in node.names:  # from segeval.formats import png -> the submodule
                submodule = f"{node.module}.{alias.name}"
                found.append((node.lineno, submodule if is_module(submodule) else node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names
                      if alias.name.startswith("segeval.")]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    for path in SOURCES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_downward(path: Path) -> None:
    here = module_name(path)
    upward = [f"{path.name}:{line} imports {target}" for line, target in imports(path)
              if layer_of(target) > layer_of(here)]
    assert not upward, "imports that run up a layer: " + "; ".join(upward)


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        graph[module_name(path)] = {target for _, target in imports(path)}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if target not in graph:  # a package attribute rather than a module
                continue
            if state.get(target) == 1:
                cycle = trail[trail.index(target):] + [target] if target in trail else \
                    [node, target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if not state.get(target):
                visit(target, trail + [target])
        state[node] = 2

    for name in sorted(graph):
        if not state.get(name):
            visit(name, [name])


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rules above would catch an upward import (guards against a checker that
    silently finds nothing)."""
    upward = tmp_path / "probe.py"
    upward.write_text("def f():\n    from segeval.commands.app import main\n")
    assert imports(upward) == [(2, "segeval.commands.app")]
    assert layer_of("segeval.commands.app") > layer_of("segeval.core.counts")
