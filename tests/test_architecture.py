"""The package's layers, read from its import statements (every one, inside functions too).

* contracts (the modules at the package's top: config, shard format, vocabulary, safe
  writes) import nothing of the package but each other;
* ``core/`` (the method) and ``create_data/`` (text -> shards) import only the contracts
  and their own folder;
* ``pretrain/`` (the run machinery) imports the core, the contracts and its own folder;
* ``teach/`` may import anything, and nothing else imports it;
* no import circle anywhere; ``create_data`` never imports torch or transformers;
* the public API (``bert_tutorial.__all__``) is exactly what the notebooks import.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

import bert_tutorial

PACKAGE = Path(bert_tutorial.__file__).resolve().parent
NOTEBOOKS = PACKAGE.parent / "notebooks"
FOLDERS = ("core", "create_data", "pretrain", "teach")
#: Layer -> the layers its modules may import.
ALLOWED = {
    "contracts": {"contracts"},
    "core": {"contracts", "core"},
    "create_data": {"contracts", "create_data"},
    "pretrain": {"contracts", "core", "pretrain"},
    "teach": {"api", "contracts", "core", "create_data", "pretrain", "teach"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "api"  # bert_tutorial/__init__.py: re-exports, lazily
    return parts[1] if parts[1] in FOLDERS else "contracts"


def imports_in(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module of the package (and every outside top-level package) ``source`` imports.

    ``module`` is the importing module's name. A name taken from the public API
    (``from bert_tutorial import Trainer``, ``from .. import Trainer``) counts as an import
    of the module that defines it; ``import bert_tutorial`` as an import of the API itself.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:  # `from . import checkpoint`: a module
                    found.add(f"{target}.{alias.name}")
                elif target == "bert_tutorial" and alias.name in bert_tutorial._EXPORTS:
                    found.add(f"bert_tutorial.{bert_tutorial._EXPORTS[alias.name]}")
                else:  # `from .data import X`: a name of that module
                    found.add(target)
    return found


def imports(module: str) -> set[str]:
    path = MODULES[module]
    return imports_in(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")


def layer_violations(module: str, imported: set[str]) -> list[str]:
    """The package modules in ``imported`` that ``module``'s layer may not import."""
    mine = layer(module)
    return sorted(m for m in imported if m in MODULES and not m.startswith(module + ".")
                  and m != module and layer(m) not in ALLOWED[mine])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) != "api"))
def test_each_module_imports_only_what_its_layer_allows(module):
    wrong = layer_violations(module, imports(module))
    assert not wrong, f"{module} ({layer(module)}) imports {wrong}, outside {sorted(ALLOWED[layer(module)])}"


def test_the_layer_check_sees_imports_through_the_public_api_and_folders():
    """Not vacuous: the core reaching the machinery by any spelling is caught."""
    for source in ("from .. import Trainer", "from bert_tutorial import Trainer",
                   "import bert_tutorial", "from bert_tutorial import pretrain",
                   "from ..pretrain.trainer import Trainer", "from ..teach import original"):
        assert layer_violations("bert_tutorial.core.step", imports_in(source, "bert_tutorial.core.step")), source
    assert not layer_violations("bert_tutorial.core.step", imports_in("from ..config import TrainConfig",
                                                                       "bert_tutorial.core.step"))


def internal_imports(module: str) -> set[str]:
    # Importing a.b.c also runs the folders' __init__ files, and the API resolves names
    # lazily: neither can close a circle at import time, so the circle check leaves them out.
    return {m for m in imports(module) if m in MODULES and m != "bert_tutorial"
            and MODULES[m].name != "__init__.py"}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (circle := visit(n)):
                return circle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (circle := visit(m)):
            return circle
    return None


def test_there_is_no_import_circle():
    circle = find_circle({m: internal_imports(m) for m in MODULES})
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_circle_check_finds_circles():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_creating_shards_needs_neither_torch_nor_transformers():
    """Direct imports; tests/test_create_attacks.py checks what a run really loads."""
    heavy = {"torch", "transformers", "matplotlib"}
    for module in MODULES:
        if layer(module) == "create_data":
            outside = {m.split(".")[0] for m in imports(module)}
            assert not outside & heavy, f"{module} imports {sorted(outside & heavy)}"


def test_each_folder_says_its_job_and_its_layer_rule():
    for folder in FOLDERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        assert doc and "Layer rule" in doc, folder


def notebook_imports() -> set[str]:
    """Names the notebooks import with ``from bert_tutorial import ...``."""
    names = set()
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code":
                continue
            # IPython's own translation of magics and shell lines into Python.
            source = TransformerManager().transform_cell("".join(cell["source"]))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ImportFrom) and node.module == "bert_tutorial":
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom | ast.Import):
                    modules = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                    # Past the API, a submodule: the API would no longer be what they use.
                    names.update(f"<{m}>" for m in modules if m and m.startswith("bert_tutorial."))
    return names


def test_the_public_api_is_what_the_notebooks_import():
    assert set(bert_tutorial.__all__) == notebook_imports()
    for name in bert_tutorial.__all__:
        assert getattr(bert_tutorial, name) is not None, name
