"""The layers of ARCHITECTURE.md hold: imports only point down, and never around in a circle.

Every `import` statement counts, lazy ones inside functions included, as an AST walk finds them.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent

# Lowest first; a module may import its own layer's modules or lower ones, never higher.
LAYERS = [
    {"cxrgen", "cxrgen.errors", "cxrgen.io", "cxrgen.config", "cxrgen.precision"},
    {"cxrgen.data", "cxrgen.labeler"},
    {"cxrgen.models"},
    {"cxrgen.decoding", "cxrgen.losses", "cxrgen.checkpoint"},
    {"cxrgen.inference", "cxrgen.ood", "cxrgen.retrieval", "cxrgen.evaluate", "cxrgen.simplify", "cxrgen.bank",
     "cxrgen.sides", "cxrgen.extras"},
    {"cxrgen.training", "cxrgen.serve"},
    {"cxrgen.commands"},
    {"cxrgen.cli"},
    {"cxrgen.testing"},  # drives the CLI and the app for tests and benchmarks; nothing in the package imports it
]


def _modules() -> dict[str, Path]:
    out = {}
    for f in (SRC / "cxrgen").rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The cxrgen modules that `name` imports (resolved to modules that exist)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {m: _imports(m, f) for m, f in MODULES.items()}


def _layer(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer - {"cxrgen"}):
            return i
    assert module == "cxrgen", f"{module} is in no layer of ARCHITECTURE.md"
    return 0


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    if MODULES[module].name == "__init__.py":  # a package's __init__ re-exports its own modules
        return
    up = [t for t in GRAPH[module] if _layer(t) > _layer(module)]
    assert not up, f"{module} (layer {_layer(module) + 1}) imports higher layers: {up}"


def test_no_import_cycle():
    edges = {m: {t for t in ts if MODULES[t].name != "__init__.py"} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in edges[m]:
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [m])


def test_no_command_imports_another_command():
    for m, targets in GRAPH.items():
        if m.startswith("cxrgen.commands."):
            others = [t for t in targets if t.startswith("cxrgen.commands.") or t == "cxrgen.cli"]
            assert not others, f"{m} imports {others}: shared work belongs in a lower layer"


def test_tests_import_no_test_module_and_touch_no_sys_path():
    for f in TESTS.glob("*.py"):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0].startswith("test_"):
                pytest.fail(f"{f.name} imports the test module {node.module}; shared fixtures go in conftest.py")
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                pytest.fail(f"{f.name} edits sys.path; import from the cxrgen package instead")
