#!/usr/bin/env python
"""Regenerate the figures the README shows, by running the notebooks that draw them.

A code cell tagged ``figure:<name>`` (cell metadata ``tags``) draws a headline figure.
This script executes each notebook holding such cells (a fresh kernel, the defaults,
on the CPU whatever the machine has: about 3 minutes on 2 idle cores), writes every tagged
cell's PNG output to ``docs/figures/<name>.png``, and records in
``docs/figures/inputs.json`` a hash of what drew them: the notebooks' code cells and
every module of the package (the numbers in the figures come from all of it). The test
suite recomputes that hash, so a code change without new figures fails CI (by inputs,
not by pixels, which differ across machines).

The notebooks resume a finished run instead of training again, so an existing
``runs/notebooks`` is first moved aside (to ``runs/notebooks.before-figures-<time>``,
never deleted) and every figure comes from a fresh run of the current code.

    python scripts/make_figures.py            # run the notebooks, write the figures
    python scripts/make_figures.py --check    # exit 1 when the figures are out of date
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
INPUTS = FIGURES / "inputs.json"
TAG = "figure:"


def figure_cells(nb: nbformat.NotebookNode) -> list[tuple[str, nbformat.NotebookNode]]:
    return [(tag[len(TAG):], cell) for cell in nb.cells if cell.cell_type == "code"
            for tag in cell.metadata.get("tags", []) if tag.startswith(TAG)]


def notebooks_with_figures() -> list[Path]:
    return [p for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
            if figure_cells(nbformat.read(p, as_version=nbformat.NO_CONVERT))]


def inputs_hash() -> dict[str, str]:
    """sha256 of every input of the figures: notebook code cells, the package, the sample data."""
    hashes = {}
    for path in notebooks_with_figures():
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        code = "\n\0".join(c.source for c in nb.cells if c.cell_type == "code")
        tags = json.dumps([c.metadata.get("tags", []) for c in nb.cells])
        hashes[f"notebooks/{path.name}"] = hashlib.sha256((code + tags).encode()).hexdigest()
    for path in sorted((ROOT / "bert_tutorial").rglob("*.py")):  # every layer's modules
        hashes[path.relative_to(ROOT).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    data = ROOT / "data_samples"  # what the runs read: shards, vocabulary, the starting model
    for path in sorted([*data.rglob("*.hdf5"), data / "vocab.txt", *(data / "base-model").glob("*.json"),
                        *(data / "base-model").glob("*.safetensors")]):
        hashes[path.relative_to(ROOT).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    script = Path(__file__).resolve()
    hashes["scripts/make_figures.py"] = hashlib.sha256(script.read_bytes()).hexdigest()
    return hashes


def run_notebook(path: Path) -> dict[str, bytes]:
    """Execute one notebook from the repository root; the PNG of each tagged cell."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1200, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    images = {}
    for name, cell in figure_cells(nb):
        pngs = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
        if not pngs:
            raise SystemExit(f"{path.name}: the cell tagged {TAG}{name} drew no PNG")
        images[name] = base64.b64decode(pngs[-1])
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the figures are out of date")
    args = parser.parse_args(argv)
    wanted = inputs_hash()
    if args.check:
        recorded = json.loads(INPUTS.read_text()) if INPUTS.is_file() else {}
        stale = sorted(k for k in wanted.keys() | recorded.keys() if wanted.get(k) != recorded.get(k))
        if stale:
            print(f"docs/figures are out of date (changed: {', '.join(stale)}): "
                  "run python scripts/make_figures.py")
            return 1
        return 0
    FIGURES.mkdir(parents=True, exist_ok=True)
    runs = ROOT / "runs" / "notebooks"
    if runs.exists():
        aside = runs.with_name(f"notebooks.before-figures-{time.strftime('%Y%m%d-%H%M%S')}")
        runs.rename(aside)
        print(f"moved {runs.relative_to(ROOT)} aside to {aside.relative_to(ROOT)}")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the figures are of the CPU defaults, reproducibly
    os.environ.pop("BERT_TUTORIAL_FULL_RUN", None)
    for path in notebooks_with_figures():
        print(f"running {path.name} ...", flush=True)
        for name, png in run_notebook(path).items():
            (FIGURES / f"{name}.png").write_bytes(png)
            print(f"  wrote docs/figures/{name}.png")
    INPUTS.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
