#!/usr/bin/env python
"""Keep the stored notebooks clean: their outputs stay, what changes from run to run goes.

    python scripts/strip_notebooks.py               # clean notebooks/*.ipynb in place
    python scripts/strip_notebooks.py --check       # only report; exit 1 if any is not clean
    python scripts/strip_notebooks.py --outputs ... # also remove every output (a blank copy)

The notebooks are committed executed (``scripts/execute_notebooks.py`` runs them), so that a
reader sees every result on GitHub. Clean means: no stderr output (progress bars, warnings:
they depend on the terminal and the machine's speed), no per-cell execution metadata
(timings, collapsed/scrolled state), no saved widget state, and notebook metadata reduced
to the kernelspec and the language name. Needs only ``nbformat``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
#: Notebook-level metadata that is kept; everything else (widgets, colab, ...) is dropped.
KEPT_METADATA = ("kernelspec", "language_info")
#: Cell-level metadata dropped (written by Jupyter/Colab/nbclient when a cell runs or is viewed).
VOLATILE_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled", "outputId", "colab")


def _volatile_output(output: nbformat.NotebookNode) -> bool:
    return output.get("output_type") == "stream" and output.get("name") == "stderr"


def problems(nb: nbformat.NotebookNode, outputs: bool = True) -> list[str]:
    """Why ``nb`` is not clean (empty when it is); ``outputs=False``: any output is a problem."""
    found = []
    extra = sorted(set(nb.metadata) - set(KEPT_METADATA))
    if extra:
        found.append(f"notebook metadata {extra}")
    language = nb.metadata.get("language_info", {})
    if set(language) - {"name"}:
        found.append(f"language_info {sorted(language)} (only 'name' is kept)")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            shown = [o for o in cell.get("outputs", []) if outputs and not _volatile_output(o)]
            if len(shown) != len(cell.get("outputs", [])):
                found.append(f"cell {i}: {len(cell.outputs) - len(shown)} output(s) to drop")
            if not outputs and cell.get("execution_count") is not None:
                found.append(f"cell {i}: execution_count {cell.execution_count}")
        volatile = sorted(set(cell.get("metadata", {})) & set(VOLATILE_CELL_METADATA))
        if volatile:
            found.append(f"cell {i}: metadata {volatile}")
        if cell.get("attachments") == {}:
            found.append(f"cell {i}: empty attachments")
    return found


def strip(nb: nbformat.NotebookNode, outputs: bool = True) -> bool:
    """Clean ``nb`` in place (``outputs=False``: remove every output); True if anything changed."""
    before = problems(nb, outputs)
    nb.metadata = nbformat.NotebookNode(
        {k: nb.metadata[k] for k in KEPT_METADATA if k in nb.metadata}
    )
    if "language_info" in nb.metadata:
        nb.metadata.language_info = nbformat.NotebookNode(
            {"name": nb.metadata.language_info.get("name", "python")}
        )
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if outputs and not _volatile_output(o)]
            if not outputs:
                cell.execution_count = None
        for key in VOLATILE_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
        if cell.get("attachments") == {}:
            del cell["attachments"]
    return bool(before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--check", action="store_true", help="report only; exit 1 if not clean")
    parser.add_argument("--outputs", action="store_true", help="remove every output too")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((ROOT / "notebooks").glob("*.ipynb"))
    dirty = 0
    for path in paths:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        found = problems(nb, outputs=not args.outputs)
        if not found:
            continue
        dirty += 1
        if args.check:
            print(f"{path}: not clean: {'; '.join(found[:5])}{' ...' if len(found) > 5 else ''}")
        else:
            strip(nb, outputs=not args.outputs)
            nbformat.write(nb, path)
            print(f"{path}: cleaned")
    if args.check and dirty:
        print(f"{dirty} notebook(s) not clean; run: python scripts/strip_notebooks.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
