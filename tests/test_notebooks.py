"""The notebooks are committed stripped, and share their setup; fast checks, nothing executed.

Running them is a separate CI step: ``pytest --nbmake notebooks/``. To strip after
running one in Jupyter: ``python scripts/strip_notebooks.py``.
"""

from __future__ import annotations

import ast
import base64
import copy
import dataclasses
import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
FULL_RUN_SWITCH = 'FULL_RUN = os.environ.get("BERT_TUTORIAL_FULL_RUN") == "1"'
RUN_SETTINGS_MARK = "# Training run settings"


def _load_strip_script():
    spec = importlib.util.spec_from_file_location("strip_notebooks", ROOT / "scripts" / "strip_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


strip_notebooks = _load_strip_script()


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def code_cells(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_the_series_is_there_in_order():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 6
    numbers = [int(re.match(r"(\d\d)_[a-z0-9_]+\.ipynb$", n).group(1)) for n in names]
    assert numbers == list(range(1, len(names) + 1)), names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_executed_and_clean(path):
    """Stored with the outputs of one run, top to bottom, and nothing that changes per run."""
    nb = read(path)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    assert strip_notebooks.problems(nb) == [], "run: python scripts/strip_notebooks.py"
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), "run: python scripts/execute_notebooks.py"
    assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_what_it_teaches_then_the_setup(path):
    nb = read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "start with a title"
    assert "You will" in first.source, "say what the notebook teaches"
    setup = code_cells(nb)[0]
    assert "google.colab" in setup and "REPO_URL" in setup and "enter_repository()" in setup
    code_lines = [line for line in setup.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    # Read at a glance: a few short lines (the URL line excepted: a fork's address may be long).
    assert len(code_lines) <= 16, f"the setup cell has grown to {len(code_lines)} lines of code"
    assert all(len(line) <= 100 for line in setup.splitlines() if "REPO_URL =" not in line)
    assert all(c.cell_type == "markdown" for c in nb.cells[: nb.cells.index(
        next(c for c in nb.cells if c.cell_type == "code"))])
    assert any(FULL_RUN_SWITCH in source for source in code_cells(nb)), "the FULL_RUN switch"


def test_setup_cell_is_identical_everywhere():
    setups = {path.name: code_cells(read(path))[0] for path in NOTEBOOKS}
    assert len(set(setups.values())) == 1, "edit the setup cell in every notebook alike"


def test_training_and_evaluation_notebooks_share_their_run_settings():
    """Notebook 06 reuses notebook 05's run only if both describe the same run."""
    settings = {}
    for path in NOTEBOOKS:
        cells = [s for s in code_cells(read(path)) if s.startswith(RUN_SETTINGS_MARK)]
        if cells:
            settings[path.name] = cells[0]
    assert {n[:2] for n in settings} == {"05", "06"}
    assert len(set(settings.values())) == 1


def python_of(source: str) -> str:
    """A code cell as plain Python: line magics and shell lines (and their continuations) blanked."""
    if source.startswith("%%"):
        return ""  # a cell magic (%%writefile): its body is not run by the kernel's Python
    lines, skipping = [], False
    for line in source.splitlines():
        skipping = skipping or line.lstrip().startswith(("%", "!"))
        if skipping:
            skipping = line.rstrip().endswith("\\")
            line = ""
        lines.append(line)
    return "\n".join(lines)


def notebook_trees(path: Path) -> list[ast.Module]:
    return [ast.parse(python_of(source)) for source in code_cells(read(path))]


def _bound_names(nodes, walk: bool = True) -> set[str]:
    """Names that ``nodes`` bind (with everything inside them when ``walk``)."""
    names = set()
    for node in (n for top in nodes for n in ast.walk(top)) if walk else nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_full_run_branches_leave_no_name_undefined(path):
    """CI runs one side of every ``if FULL_RUN``: a name that only the other side sets, and that
    a later line reads, would be a NameError that only a user with FULL_RUN meets."""
    trees = notebook_trees(path)
    branches = [(cell, node) for cell, tree in enumerate(trees) for node in ast.walk(tree)
                if isinstance(node, ast.If)
                and any(isinstance(n, ast.Name) and n.id == "FULL_RUN" for n in ast.walk(node.test))]
    problems = []
    for cell, branch in branches:
        inside = {id(n) for part in (branch.body, branch.orelse) for top in part for n in ast.walk(top)}
        outside = [n for tree in trees for n in ast.walk(tree) if id(n) not in inside]
        read_outside = {n.id for n in outside if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        bound_outside = _bound_names(outside, walk=False)
        one_side = _bound_names(branch.body) ^ _bound_names(branch.orelse)
        problems += [f"code cell {cell}, line {branch.lineno}: {name} is set on one side only"
                     for name in sorted((one_side & read_outside) - bound_outside)]
    assert problems == [], problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_calls_fit_the_package_signatures(path):
    """Every call of a ``bert_tutorial`` function or class binds to its current signature, in
    both FULL_RUN branches (CI executes only one): an argument the package dropped fails here."""
    import bert_tutorial
    from bert_tutorial.config import TrainConfig

    trees = notebook_trees(path)
    imported = {alias.asname or alias.name: getattr(bert_tutorial, alias.name)
                for tree in trees for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module == "bert_tutorial"
                for alias in node.names}

    def resolve(func):  # a name imported from the package, or an attribute chain on one
        if isinstance(func, ast.Name):
            return imported.get(func.id)
        if isinstance(func, ast.Attribute):
            owner = resolve(func.value)
            return None if owner is None else getattr(owner, func.attr)
        return None

    checked, problems = 0, []
    calls = [(cell, n) for cell, tree in enumerate(trees) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    for cell, call in calls:
        target = resolve(call.func)
        if target is None or not callable(target):
            continue
        keywords = [k.arg for k in call.keywords if k.arg is not None]
        where = f"code cell {cell}, line {call.lineno}: {ast.unparse(call.func)}"
        if getattr(target, "__func__", None) is TrainConfig.full.__func__:
            fields = {f.name for f in dataclasses.fields(TrainConfig)}
            problems += [f"{where}: no TrainConfig field {k!r}" for k in keywords if k not in fields]
        signature = inspect.signature(target)
        if any(isinstance(a, ast.Starred) for a in call.args) or len(keywords) < len(call.keywords):
            takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
            problems += [f"{where}: no parameter {k!r}" for k in keywords
                         if not takes_any and k not in signature.parameters]
        else:
            try:
                signature.bind(*call.args, **dict.fromkeys(keywords))
            except TypeError as err:
                problems.append(f"{where}: {err}")
        checked += 1
    assert checked > 0 and problems == [], problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_links_to_other_notebooks_resolve(path):
    text = "\n".join(c.source for c in read(path).cells if c.cell_type == "markdown")
    for target in re.findall(r"\]\(([^)#]+\.ipynb)\)", text):
        if target.startswith(("http://", "https://")):
            continue  # the Colab badge: checked by the sync test
        assert (NOTEBOOK_DIR / target).is_file(), f"{path.name} links to missing {target}"


def test_strip_keeps_the_outputs_and_drops_what_changes_per_run(tmp_path):
    nb = read(NOTEBOOKS[0])
    executed = copy.deepcopy(nb)
    cell = next(c for c in executed.cells if c.cell_type == "code")
    kept = nbformat.v4.new_output("stream", name="stdout", text="hi\n")
    cell.outputs = [kept, nbformat.v4.new_output("stream", name="stderr", text="train: 10%|#\r")]
    cell.metadata["execution"] = {"iopub.status.idle": "2025-01-01T00:00:00Z"}
    executed.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    executed.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    found = strip_notebooks.problems(executed)
    assert len(found) == 4, found
    assert strip_notebooks.strip(executed) is True
    assert strip_notebooks.problems(executed) == [] and strip_notebooks.strip(executed) is False
    assert cell.outputs == [kept]  # stdout stays, the progress bar goes
    blank = copy.deepcopy(executed)
    assert strip_notebooks.strip(blank, outputs=False) is True
    assert all(c.outputs == [] and c.execution_count is None for c in blank.cells if c.cell_type == "code")

    path = tmp_path / "run.ipynb"
    cell.outputs = [kept, nbformat.v4.new_output("stream", name="stderr", text="warning\n")]
    nbformat.write(executed, path)
    script = [sys.executable, str(ROOT / "scripts" / "strip_notebooks.py")]
    check = subprocess.run([*script, "--check", str(path)], capture_output=True, text=True)
    assert check.returncode == 1 and "not clean" in check.stdout
    assert subprocess.run([*script, str(path)], capture_output=True).returncode == 0
    assert subprocess.run([*script, "--check", str(path)], capture_output=True).returncode == 0
    cell.outputs = [kept]  # what cleaning the file must have left
    assert read(path).cells == executed.cells


def test_setup_cells_badges_and_readme_agree_with_the_repository_url():
    """pyproject.toml's Repository URL is the one place it is set (scripts/sync_notebooks.py)."""
    sync = subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_notebooks.py"), "--check"],
                          capture_output=True, text=True)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    for path in NOTEBOOKS:
        title = read(path).cells[0].source
        assert f"notebooks/{path.name})" in title and "colab-badge.svg" in title


def test_stored_outputs_and_readme_figures_come_from_the_current_code():
    """The notebooks' stored outputs and docs/figures match the code that makes them (by input hash).

    Changing a notebook's code, the package or the sample data without running
    ``python scripts/execute_notebooks.py`` fails here; the hash covers inputs, not pixels,
    which differ between machines. Each README figure is the stored output of its cell.
    """
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "execute_notebooks.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    readme = (ROOT / "README.md").read_text()
    for path in NOTEBOOKS:
        for cell in read(path).cells:
            for tag in cell.metadata.get("tags", []):
                if tag.startswith("figure:"):
                    name = tag.removeprefix("figure:")
                    png = ROOT / "docs" / "figures" / f"{name}.png"
                    stored = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
                    assert stored and base64.b64decode(stored[-1]) == png.read_bytes(), name
                    assert f"docs/figures/{name}.png" in readme, f"the README does not show {name}"


SETUP_HARNESS = """
import importlib.metadata, shutil, subprocess, sys, types
from pathlib import Path
sys.modules["google.colab"] = types.ModuleType("google.colab")  # as in a Colab kernel
calls = []
class Done:
    def __init__(self, returncode): self.returncode = returncode
def fake_run(cmd, check=False):
    calls.append(cmd[:3] if cmd[0] == "git" else cmd[-3:])
    if cmd[0] == "git" and {clone_ok}:  # what the clone brings
        shutil.copytree({package!r}, Path(cmd[-1]) / "bert_tutorial")
    return Done(0 if cmd[0] != "git" or {clone_ok} else 128)
subprocess.run = fake_run
{preimport}
try:
    exec({cell!r})
except RuntimeError as err:
    print("RuntimeError:", err)
print("calls:", calls)
print("cwd:", Path.cwd())
"""

#: The runtime imported transformers before the setup cell, and pip then installed another version.
UPGRADED_UNDER_A_LOADED_TRANSFORMERS = """
import transformers
real_version = importlib.metadata.version
importlib.metadata.version = lambda name: "99.0" if name == "transformers" else real_version(name)
"""


@pytest.mark.parametrize("case", ["fresh", "clone fails", "transformers imported",
                                  "transformers upgraded", "placeholder URL"])
def test_setup_cell_in_a_hosted_runtime(tmp_path, case):
    """The setup cell in a (simulated) Colab kernel: clone, install, chdir; or a named stop."""
    setup = code_cells(read(NOTEBOOKS[0]))[0].replace("/content/repo", str(tmp_path / "repo"))
    if case != "placeholder URL":  # as in a published copy (the check's own literal stays)
        setup = setup.replace("github.com/YOUR-ACCOUNT/", "github.com/someone/")
    preimport = {"transformers imported": "import transformers",
                 "transformers upgraded": UPGRADED_UNDER_A_LOADED_TRANSFORMERS}.get(case, "")
    script = SETUP_HARNESS.format(clone_ok=case != "clone fails", cell=setup, preimport=preimport,
                                  package=str(ROOT / "bert_tutorial"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300).stdout
    if case == "fresh":
        assert "RuntimeError" not in out and f"cwd: {tmp_path / 'repo'}" in out
        assert "['git', 'clone', '--depth=1']" in out and f"'-e', '{tmp_path / 'repo'}'" in out
    elif case == "clone fails":
        assert "RuntimeError: cannot clone" in out and "internet" in out and "pip" not in out
    elif case == "placeholder URL":  # nothing cloned or installed, and the fix is named
        assert "RuntimeError: cannot clone" in out and "a placeholder: set [project.urls] Repository" in out
        assert "calls: []" in out
    elif case == "transformers imported":  # the same version: nothing to restart
        assert "RuntimeError" not in out and f"cwd: {tmp_path / 'repo'}" in out
    else:
        assert "RuntimeError: transformers" in out and "99.0 is installed now: restart the session" in out


@pytest.mark.parametrize("start", ["notebooks", "."])
def test_setup_cell_in_a_local_checkout_uses_that_checkout(tmp_path, start):
    """Locally the cell finds the checkout it runs in (not another one installed with -e)."""
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "bert_tutorial", checkout / "bert_tutorial")
    (checkout / "notebooks").mkdir()
    setup = code_cells(read(NOTEBOOKS[0]))[0]
    script = f"exec({setup!r})\nprint('package:', sys.modules['bert_tutorial'].__file__)\nprint('cwd:', Path.cwd())"
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []  # the cell, not `python -c`, finds it
    out = subprocess.run([sys.executable, *safe_path, "-c", script], capture_output=True, text=True,
                         timeout=300, cwd=checkout / start)
    assert out.returncode == 0, out.stderr
    assert f"cwd: {checkout}" in out.stdout and f"package: {checkout / 'bert_tutorial'}" in out.stdout


def test_stored_stream_outputs_do_not_depend_on_how_a_print_was_chunked():
    """A command's output relayed as it comes may arrive in any pieces, one of a single space
    included: the stored text is the same, and a progress bar split across pieces still goes."""
    spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "scripts" / "execute_notebooks.py")
    execute_notebooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(execute_notebooks)

    def stream(text: str) -> nbformat.NotebookNode:
        return nbformat.v4.new_output("stream", name="stdout", text=text)

    line = 'Final eval: {"step": 12}\n'
    bar = "train: 100%|#####| 12/12 [00:01<00:00, 6.45it/s]\n"
    whole = execute_notebooks.merge_streams([stream(line + bar)])
    pieces = execute_notebooks.merge_streams([stream("Final eval:"), stream(" "), stream('{"step": 12}\ntrain: 100%|##'),
                                              stream("###| 12/12 [00:01<00:00, 6.45it/s]\n")])
    assert [o["text"] for o in pieces] == [o["text"] for o in whole] == [line]
