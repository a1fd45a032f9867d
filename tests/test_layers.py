"""The package's imports run one way, down the layers of the README's Layout section.

Every ``import yolov4.X`` / ``from yolov4.X import`` in ``src/yolov4`` (module level, inside
functions and under ``TYPE_CHECKING`` alike) is an edge between top-level packages; an edge to a
higher layer, or to a sibling the table does not allow, fails; so does any cycle between modules.
``__main__`` modules are entry points (like ``cli``) and may import anything.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import yolov4

PACKAGE = Path(yolov4.__file__).resolve().parent

# Lowest first. A package may import any package of a lower layer.
LAYERS: list[set[str]] = [
    {"errors", "ops", "version"},
    {"models"},
    {"loss", "darknet"},
    {"core", "anchors"},
    {"data", "evaluation", "export", "inference", "training"},
    {"serve", "cli"},
]
# Sibling imports the layout table (docs/design/layout.md) allows.
SIBLINGS = {
    ("training", "evaluation"),  # validation scores with the COCO evaluator
    ("export", "inference"),  # export checks each file through the backend that will serve it
    ("export", "data"),  # an NMS graph without calibration images is checked on synthetic scenes
    ("training", "inference"),  # sharded predict writes predict.py's records (prediction_record)
    ("training", "data"),  # the requeue's skipping loader extends data's train loader
}
# The package root re-exports the public API of every layer.
ROOT = "yolov4"


def layer_of(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"package yolov4.{package} is in no layer of tests/test_layers.py")


def module_name(path: Path) -> str:
    parts = ("yolov4", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str) -> set[str]:
    """Absolute names of the yolov4 modules ``path`` imports (relative imports resolved)."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "yolov4"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] == "yolov4":
                found.add(module)
                # `from yolov4.x import y` may import the submodule yolov4.x.y
                found |= {f"{module}.{a.name}" for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    g = {
        name: {m for m in imports(path, name) if m in modules and m != name}
        for name, path in modules.items()
    }
    # every check below passes vacuously on an empty graph (a moved package, a wrong root)
    assert sum(map(len, g.values())) > 0, f"no yolov4 imports found under {PACKAGE}"
    return g


@pytest.fixture(scope="module")
def import_graph() -> dict[str, set[str]]:
    """:func:`graph`, walked once for the tests below (they only read it)."""
    return graph()


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def test_no_upward_or_sideways_imports(import_graph):
    bad = []
    for module, targets in import_graph.items():
        src = top(module)
        if src == ROOT or module.endswith("__main__"):
            continue
        for target in targets:
            dst = top(target)
            if dst == src:
                continue
            if dst == ROOT:
                bad.append(f"{module} -> {target} (the package root imports everything)")
            elif layer_of(dst) > layer_of(src) or (
                layer_of(dst) == layer_of(src) and (src, dst) not in SIBLINGS
            ):
                bad.append(f"{module} -> {target}")
    assert not bad, "imports against the layers:\n  " + "\n  ".join(sorted(bad))


def test_no_import_cycles(import_graph):
    g = import_graph
    # a package __init__ importing its own submodules is not a cycle of the design
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in g.items()}
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state[nxt] == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif state[nxt] == 0:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if state[node] == 0:
            visit(node, [])
    assert not cycles, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def test_bottom_layers_do_not_import_frameworks():
    """ops, models and core stay free of Lightning, Hydra, albumentations and FastAPI."""
    banned = ("lightning", "hydra", "omegaconf", "albumentations", "fastapi", "uvicorn")
    bad = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if top(name) not in ("ops", "models", "core"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            bad += [f"{name} imports {n}" for n in names if n.split(".")[0] in banned]
    assert not bad, "\n".join(bad)


def test_the_graph_walked_is_the_package(import_graph):
    """The checks above see every layer's modules and the imports between them."""
    g = import_graph
    assert {top(m) for m in g} >= {p for layer in LAYERS for p in layer}
    assert "yolov4.core.preprocess" in g["yolov4.inference.predictor"]
    assert "yolov4.inference.predictor" in g["yolov4.serve.jobs"] | g["yolov4.inference"]
    assert len(g) > 50 and sum(map(len, g.values())) > 100
