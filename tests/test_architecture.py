"""The layers of docs/architecture.md, read off the real imports: dependencies point inward.

Every module of the package is parsed (no import is executed); each top-level unit (a subpackage
such as ``adapters`` or a module such as ``inputs``) may import only the units listed for it below,
and the table in docs/architecture.md must list the same units, so the document cannot drift from
the code. Only ``adapters/hf.py`` imports transformers internals (``transformers.models...``,
``transformers.cache_utils``...) or reaches a private name (``_x``) of a transformers object: the
one seam to transformers.
"""

import ast
import importlib.util
import re
from collections import defaultdict
from pathlib import Path

import pytest

import fluxmem

PACKAGE = Path(fluxmem.__file__).parent
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

# unit -> the units it may import (the package root only for ``__version__``).
LAYERS = {
    "errors": set(),
    "outputs": {"errors"},
    "memory": {"errors"},
    "memories": {"errors", "memory"},
    "video": {"errors"},
    "adapters": {"errors", "memory", "memories"},
    "inputs": {"errors", "video"},
    "models": {"adapters", "errors", "memory", "memories"},
    "loading": {"adapters", "errors", "memory", "memories"},
    "inference": {"adapters", "errors", "inputs", "memory", "video", "memories"},
    "session": {"adapters", "errors", "inputs", "memory", "video", "memories"},
    "eval": {"adapters", "errors", "inference", "inputs", "loading", "memory", "outputs", "session", "video", "memories"},
    "train": {"adapters", "errors", "inference", "inputs", "loading", "memory", "outputs", "video", "memories"},
    "viz": {"adapters", "errors", "inference", "inputs", "memory", "outputs", "video", "memories"},
    "demo": {"adapters", "errors", "inference", "inputs", "loading", "memory", "session", "video", "viz", "memories"},
    "serving": {"adapters", "errors", "inputs", "memory", "video", "memories", "session"},
    "cli": {"adapters", "demo", "errors", "eval", "inference", "inputs", "loading", "memory", "models",
            "outputs", "serving", "session", "testing", "testing_families", "train", "video", "viz", "memories"},
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


# Private names reached outside hf.py on objects that are NOT transformers objects, and why.
# Anything else (a new ``config._x``, ``model._x``, ``getattr(x, "_x")``) fails the test below.
NOT_TRANSFORMERS = {
    ("adapters/switch.py", "_set_last"): "fluxmem's own FluxMemState",
    ("cli/eval.py", "_actions"): "argparse's parser",
    ("demo/app.py", "_fluxmem_styling"): "fluxmem's own attribute on a Gradio Blocks",
    ("serving/common.py", "_get_expected_hidden_size"): "vLLM's processing info (serving/ is the vLLM seam)",
    ("serving/qwen2_vl.py", "_spatial_merge_size"): "vLLM's data parser",
    ("serving/qwen2_5_vl.py", "_spatial_merge_size"): "vLLM's data parser",
    ("serving/qwen3_vl.py", "_spatial_merge_size"): "vLLM's data parser",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _root(node: ast.AST) -> ast.AST:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node


class _Reaches(ast.NodeVisitor):
    """Private names and submodules of transformers that one module reaches, as ``(line, what)``."""

    def __init__(self, tree: ast.Module, path: str) -> None:
        self.path, self.found, self.classes = path, [], []
        self.upstream, self.modules = set(), set()  # names bound to transformers things / to other imports
        self.package = set()  # names bound to the transformers package itself
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    (self.upstream if alias.name.split(".")[0] == "transformers" else self.modules).add(bound)
                    if alias.name == "transformers" or not alias.asname:
                        self.package |= {bound} if bound in self.upstream else set()
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    bound = alias.asname or alias.name
                    upstream = (node.module or "").split(".")[0] == "transformers" and not node.level
                    (self.upstream if upstream else self.modules).add(bound)

    def _upstream(self, node: ast.AST) -> bool:
        root = _root(node)
        return isinstance(root, ast.Name) and root.id in self.upstream

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        derived = any(self._upstream(base) for base in node.bases)
        own = {item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
        own |= {target.attr for item in ast.walk(node) if isinstance(item, ast.Assign) for target in item.targets
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"}
        if derived:
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(item.name):
                    self.found.append((item.lineno, f"{node.name} overrides {item.name} of a transformers class"))
        self.classes.append((derived, own))
        self.generic_visit(node)
        self.classes.pop()

    def _check(self, line: int, base: ast.AST, name: str) -> None:
        if not _private(name):
            return
        derived, own = self.classes[-1] if self.classes else (False, set())
        text = f"{ast.unparse(base)}.{name}"
        if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
            ok = not derived
        elif isinstance(base, ast.Name) and base.id in ("self", "cls"):
            ok = not derived or name in own
        elif self._upstream(base):
            ok = False
        elif isinstance(base, ast.Name) and base.id in self.modules:
            ok = True  # a module of another package (os, vLLM)
        else:
            ok = (self.path, name) in NOT_TRANSFORMERS
        if not ok:
            self.found.append((line, text))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._check(node.lineno, node.value, node.attr)
        if (isinstance(node.value, ast.Name) and node.value.id in self.package and node.attr != "trainer_utils"
                and importlib.util.find_spec(f"transformers.{node.attr}") is not None):
                self.found.append((node.lineno, f"{node.value.id}.{node.attr} (a transformers submodule)"))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if (isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            self._check(node.lineno, node.args[0], node.args[1].value)
        self.generic_visit(node)


def private_reaches(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    visitor = _Reaches(tree, path.relative_to(PACKAGE).as_posix())
    visitor.visit(tree)
    return visitor.found


def test_only_the_seam_reaches_private_names_or_submodules_of_transformers():
    found = {path.relative_to(PACKAGE).as_posix(): private_reaches(path) for path in sorted(PACKAGE.rglob("*.py"))}
    outside = {path: reaches for path, reaches in found.items() if reaches and path != "adapters/hf.py"}
    assert not outside, f"transformers private names or submodules reached outside adapters/hf.py: {outside}"


@pytest.mark.parametrize(
    "source, reach",
    [
        ("def f(config):\n    config._attn_implementation = 'sdpa'\n", "config._attn_implementation"),
        ("import transformers\ntransformers.models.qwen2_vl\n", "transformers.models (a transformers submodule)"),
        ("from transformers import Trainer\nclass T(Trainer):\n    def f(self):\n        return super()._load_from_checkpoint\n",
         "super()._load_from_checkpoint"),
        ("from transformers import Trainer\nclass T(Trainer):\n    def f(self):\n        return self._train_batch_size\n",
         "self._train_batch_size"),
        ("def f(tower):\n    return getattr(tower, '_from_config')\n", "tower._from_config"),
    ],
)
def test_the_seam_check_catches_each_kind_of_reach(tmp_path, monkeypatch, source, reach):
    module = PACKAGE / "cli" / "_probe_of_the_seam_check.py"  # a path inside the package, never written
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == module else _read(self, *a, **k))
    assert [what for _, what in private_reaches(module)] == [reach]


_read = Path.read_text


def test_the_architecture_document_lists_the_same_dependencies():
    """docs/architecture.md holds the import table between its ``imports`` markers; it must equal
    the real graph."""
    text = DOC.read_text()
    table = text[text.index("<!-- imports"): text.index("<!-- /imports -->")]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]*) \|", table, flags=re.MULTILINE))
    documented = {unit: set(re.findall(r"`(\w+)`", deps)) for unit, deps in rows.items()}
    real = {unit: deps - {"__init__"} for unit, deps in graph_units().items()}
    assert documented == real


def graph_units() -> dict[str, set[str]]:
    """Every unit but the package root and ``__main__``, with what it imports (``errors`` included)."""
    graph, _ = _graph()
    units = {_unit(path) for path in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    return {unit: set(graph.get(unit, set())) for unit in units}
