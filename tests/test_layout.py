"""The package's layout: layers import only downward, no import cycles, small modules.

Read from the source with ``ast`` (nothing is imported), so a new upward import, a cycle or
an oversized module fails here before anyone has to find it by reading.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qsgd_codec"
MAX_LINES = 700

# Lowest layer first.  A module may import modules of its own layer or below, never above.
LAYERS = [
    ["errors"],
    ["wire"],
    ["reference"],
    ["cpu", "interop"],
    ["cuda"],
    ["api"],
    ["conformance"],
    ["adapters", "mpi", "torch_ddp", "numcodecs_codec"],
    ["cli", "__main__", "demo", "__init__"],
]
LAYER_OF = {name: k for k, names in enumerate(LAYERS) for name in names}


def _modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module, level, name, package):
    """The dotted module an import statement names (a submodule when ``name`` is one)."""
    if level:
        base = package.split(".")
        base = base[: len(base) - level + 1]
        target = ".".join(base + ([module] if module else []))
    else:
        target = module
    if name and f"{target}.{name}" in MODULES:
        return f"{target}.{name}"
    return target


def _imports(dotted, path):
    """Every qsgd_codec module that ``dotted`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    package = dotted if is_package else dotted.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                targets.add(_resolve(node.module, node.level, alias.name, package))
    return {t for t in targets if t == "qsgd_codec" or t.startswith("qsgd_codec.")}


def _layer(dotted):
    parts = dotted.split(".")
    return LAYER_OF[parts[1] if len(parts) > 1 else "__init__"]


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    unknown = sorted(
        name for name in MODULES if (name.split(".") + ["__init__"])[1] not in LAYER_OF
    )
    assert not unknown, f"modules outside the layer table of {__file__}: {unknown}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    up = sorted(
        t
        for t in GRAPH[module]
        if t in MODULES and t != "qsgd_codec" and _layer(t) > _layer(module)
    )
    assert not up, f"{module} imports higher layers: {up}"


def test_no_import_cycles():
    # Tarjan-free: a cycle exists iff some module reaches itself
    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in GRAPH.get(todo.pop(), ()):
                if nxt in MODULES and nxt not in seen and nxt != "qsgd_codec":
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(m for m in MODULES if m in reach(m))
    assert not cycles, f"modules in an import cycle: {cycles}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES})"
