"""The layers of docs/architecture.md, read off the real imports: dependencies point inward.

Every module of the package is parsed (no import is executed); each top-level unit (a subpackage
such as ``adapters`` or a module such as ``inputs``) may import only the units listed for it below,
and the table in docs/architecture.md must list the same units, so the document cannot drift from
the code. Only ``adapters/hf.py`` imports transformers internals (``transformers.models...``,
``transformers.cache_utils``...): the one seam to transformers.
"""

import ast
import re
from collections import defaultdict
from pathlib import Path

import fluxmem

PACKAGE = Path(fluxmem.__file__).parent
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

# unit -> the units it may import (the package root only for ``__version__``).
LAYERS = {
    "errors": set(),
    "memory": {"errors"},
    "memories": {"errors", "memory"},
    "video": {"errors"},
    "adapters": {"errors", "memory", "memories"},
    "inputs": {"errors", "video"},
    "models": {"adapters", "errors", "memory", "memories"},
    "loading": {"adapters", "errors", "memory", "memories"},
    "inference": {"adapters", "errors", "inputs", "memory", "video", "memories"},
    "session": {"adapters", "errors", "inputs", "memory", "video", "memories"},
    "eval": {"adapters", "errors", "inference", "inputs", "loading", "memory", "session", "video", "memories"},
    "train": {"adapters", "errors", "inference", "inputs", "loading", "memory", "video", "memories"},
    "viz": {"adapters", "errors", "inference", "inputs", "memory", "video", "memories"},
    "demo": {"adapters", "errors", "inference", "inputs", "loading", "memory", "session", "video", "viz", "memories"},
    "serving": {"adapters", "errors", "inputs", "memory", "video", "memories", "session"},
    "cli": {"adapters", "demo", "errors", "eval", "inference", "inputs", "loading", "memory", "models",
            "serving", "session", "train", "video", "viz", "memories"},
    "testing": {"adapters", "errors", "memory", "testing_families", "memories"},
    "testing_families": {"adapters", "errors", "memory", "testing", "memories"},
    "__init__": {"adapters", "errors", "memory", "models", "session", "video", "inputs", "loading", "inference", "memories"},
    "__main__": {"cli"},
}


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(fluxmem units, transformers modules) that ``path`` imports."""
    units, upstream = set(), set()
    package = list(path.relative_to(PACKAGE).parent.parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    units.add(target[0])
                else:  # from .. import name
                    units.update("__init__" if alias.name == "__version__" else alias.name for alias in node.names)
            elif node.module:
                if node.module.startswith("fluxmem."):
                    units.add(node.module.split(".")[1])
                if node.module.startswith("transformers"):
                    upstream.add(node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fluxmem."):
                    units.add(alias.name.split(".")[1])
                if alias.name.startswith("transformers"):
                    upstream.add(alias.name)
    return units, upstream


def _graph():
    graph, upstream = defaultdict(set), {}
    for path in sorted(PACKAGE.rglob("*.py")):
        units, modules = _imports(path)
        unit = _unit(path)
        graph[unit] |= units - {unit}
        upstream[path.relative_to(PACKAGE).as_posix()] = modules
    return graph, upstream


def test_every_unit_imports_only_inner_layers():
    graph, _ = _graph()
    assert set(graph) <= set(LAYERS), f"units without a layer: {set(graph) - set(LAYERS)}"
    wrong = {unit: sorted(deps - LAYERS[unit] - {"__init__"} if unit != "__init__" else deps - LAYERS[unit])
             for unit, deps in graph.items()}
    assert not {unit: deps for unit, deps in wrong.items() if deps}


def test_the_algorithm_imports_nothing_of_the_package_but_its_errors():
    graph, _ = _graph()
    assert graph["memory"] <= {"errors"}


def test_only_the_seam_imports_transformers_internals():
    _, upstream = _graph()
    public = {"transformers", "transformers.trainer_utils"}  # the top level and documented Trainer utilities
    internal = {path: sorted(m for m in modules if m not in public) for path, modules in upstream.items()}
    outside = {path: modules for path, modules in internal.items() if modules and path != "adapters/hf.py"}
    # test helpers build tiny models from public config classes only
    outside = {p: m for p, m in outside.items() if not p.startswith("testing")}
    assert not outside, f"transformers internals imported outside adapters/hf.py: {outside}"


def test_the_architecture_document_lists_the_same_dependencies():
    """docs/architecture.md holds the import table between its ``imports`` markers; it must equal
    the real graph."""
    text = DOC.read_text()
    table = text[text.index("<!-- imports"): text.index("<!-- /imports -->")]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]*) \|", table, flags=re.M))
    documented = {unit: set(re.findall(r"`(\w+)`", deps)) for unit, deps in rows.items()}
    real = {unit: deps - {"__init__"} for unit, deps in graph_units().items()}
    assert documented == real


def graph_units() -> dict[str, set[str]]:
    """Every unit but the package root and ``__main__``, with what it imports (``errors`` included)."""
    graph, _ = _graph()
    units = {_unit(path) for path in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    return {unit: set(graph.get(unit, set())) for unit in units}
