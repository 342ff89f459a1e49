#!/usr/bin/env python
"""Strip the tutorial notebooks' outputs: the repository commits them without any.

    python scripts/strip_notebooks.py             # strip notebooks/*.ipynb in place
    python scripts/strip_notebooks.py --check     # only report; exit 1 if any is not stripped
    python scripts/strip_notebooks.py a.ipynb ... # other files

Stripped means: no cell outputs, every ``execution_count`` null, no per-cell execution
metadata (timings, collapsed/scrolled state), no saved widget state, and notebook
metadata reduced to the kernelspec and the language name, so that running a notebook
and saving it leaves no diff once stripped. Needs only ``nbformat``.
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


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """Why ``nb`` is not stripped (empty when it is)."""
    found = []
    extra = sorted(set(nb.metadata) - set(KEPT_METADATA))
    if extra:
        found.append(f"notebook metadata {extra}")
    language = nb.metadata.get("language_info", {})
    if set(language) - {"name"}:
        found.append(f"language_info {sorted(language)} (only 'name' is kept)")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            if cell.get("outputs"):
                found.append(f"cell {i}: {len(cell.outputs)} output(s)")
            if cell.get("execution_count") is not None:
                found.append(f"cell {i}: execution_count {cell.execution_count}")
        volatile = sorted(set(cell.get("metadata", {})) & set(VOLATILE_CELL_METADATA))
        if volatile:
            found.append(f"cell {i}: metadata {volatile}")
        if cell.get("attachments") == {}:
            found.append(f"cell {i}: empty attachments")
    return found


def strip(nb: nbformat.NotebookNode) -> bool:
    """Strip ``nb`` in place; True if anything changed."""
    before = problems(nb)
    nb.metadata = nbformat.NotebookNode(
        {k: nb.metadata[k] for k in KEPT_METADATA if k in nb.metadata}
    )
    if "language_info" in nb.metadata:
        nb.metadata.language_info = nbformat.NotebookNode(
            {"name": nb.metadata.language_info.get("name", "python")}
        )
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in VOLATILE_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
        if cell.get("attachments") == {}:
            del cell["attachments"]
    return bool(before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--check", action="store_true", help="report only; exit 1 if not stripped")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((ROOT / "notebooks").glob("*.ipynb"))
    dirty = 0
    for path in paths:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        found = problems(nb)
        if not found:
            continue
        dirty += 1
        if args.check:
            print(f"{path}: not stripped: {'; '.join(found[:5])}{' ...' if len(found) > 5 else ''}")
        else:
            strip(nb)
            nbformat.write(nb, path)
            print(f"{path}: stripped")
    if args.check and dirty:
        print(f"{dirty} notebook(s) with outputs; run: python scripts/strip_notebooks.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
