#!/usr/bin/env python
"""Run every notebook and store its outputs, and write the README's figures: one command.

The notebooks are committed executed, so that a reader sees each result on GitHub. This
script runs each one (a fresh kernel, the defaults, on the CPU whatever the machine has),
writes its outputs into the notebook, cleaned of what changes from run to run
(``strip_notebooks.py``: stderr, i.e. progress bars and warnings; timings), writes every
cell tagged ``figure:<name>`` as ``docs/figures/<name>.png``, and records in
``docs/figures/inputs.json`` a hash of what produced them all: every notebook's code cells,
every module of the package and the sample data. The test suite recomputes that hash, so
a code change without fresh outputs fails (by inputs, not by pixels, which differ across
machines).

The notebooks resume a finished run instead of training again, so an existing
``runs/notebooks`` is first moved aside (to ``runs/notebooks.before-outputs-<time>``, never
deleted) and every output comes from a fresh run of the current code.

    python scripts/execute_notebooks.py            # run the notebooks, store outputs and figures
    python scripts/execute_notebooks.py --check    # exit 1 when they are out of date
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIGURES = ROOT / "docs" / "figures"
INPUTS = FIGURES / "inputs.json"
TAG = "figure:"
sys.path.insert(0, str(ROOT / "scripts"))
from strip_notebooks import strip  # noqa: E402

from bert_tutorial.safe_io import write_bytes_atomic, write_text_atomic  # noqa: E402  (a crash never leaves half a file)


def figure_cells(nb: nbformat.NotebookNode) -> list[tuple[str, nbformat.NotebookNode]]:
    return [(tag[len(TAG):], cell) for cell in nb.cells if cell.cell_type == "code"
            for tag in cell.metadata.get("tags", []) if tag.startswith(TAG)]


def inputs_hash() -> dict[str, str]:
    """sha256 of every input of the outputs: notebook code cells, the package, the sample data."""
    hashes = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        code = "\n\0".join(c.source for c in nb.cells if c.cell_type == "code")
        tags = json.dumps([c.metadata.get("tags", []) for c in nb.cells])
        hashes[f"notebooks/{path.name}"] = hashlib.sha256((code + tags).encode()).hexdigest()
    for path in sorted((ROOT / "bert_tutorial").rglob("*.py")):  # every layer's modules
        hashes[path.relative_to(ROOT).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    data = ROOT / "data_samples"  # what the runs read: shards, vocabulary, corpus, the starting model
    for path in sorted([*data.rglob("*.hdf5"), data / "vocab.txt", *(data / "corpus").glob("*.txt"),
                        *(data / "base-model").glob("*.json"), *(data / "base-model").glob("*.safetensors")]):
        hashes[path.relative_to(ROOT).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    for script in ("execute_notebooks.py", "strip_notebooks.py"):
        hashes[f"scripts/{script}"] = hashlib.sha256((ROOT / "scripts" / script).read_bytes()).hexdigest()
    return hashes


#: A progress bar's line ("train: 100%|#####| 12/12 [00:01<00:00, 6.45it/s]"), e.g. from a command
#: whose output a cell prints: it shows the machine's speed, not a result.
PROGRESS_LINE = re.compile(r"\d+%\|.*\|\s*\d+/\d+ \[")


def without_progress_lines(text: str) -> str:
    lines = [line for line in text.replace("\r\n", "\n").split("\n")
             if not PROGRESS_LINE.search(line) and line.strip("\r ") != "" or line == ""]
    return "\n".join(lines)


def merge_streams(outputs: list[nbformat.NotebookNode]) -> list[nbformat.NotebookNode]:
    """Consecutive stdout chunks as one output (how many chunks a print arrives in varies),
    progress lines dropped from the merged text: a chunk may hold part of a line (a command's
    output relayed as it comes), and filtering chunk by chunk dropped a chunk of one space."""
    merged: list[nbformat.NotebookNode] = []
    for out in outputs:
        if merged and out.get("output_type") == "stream" == merged[-1].get("output_type") \
                and out.get("name") == merged[-1].get("name"):
            merged[-1]["text"] += out["text"]
        else:
            merged.append(out)
    for out in merged:
        if out.get("output_type") == "stream":
            out["text"] = without_progress_lines(out["text"])
    return merged


def execute(path: Path) -> nbformat.NotebookNode:
    """Run one notebook from its folder; return it with clean outputs."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1200, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    strip(nb)  # stderr and run metadata out
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if outputs and figures are out of date")
    args = parser.parse_args(argv)
    wanted = inputs_hash()
    if args.check:
        recorded = json.loads(INPUTS.read_text()) if INPUTS.is_file() else {}
        stale = sorted(k for k in wanted.keys() | recorded.keys() if wanted.get(k) != recorded.get(k))
        if stale:
            print(f"the notebooks' stored outputs and docs/figures are out of date (changed: "
                  f"{', '.join(stale)}): run python scripts/execute_notebooks.py")
            return 1
        return 0
    FIGURES.mkdir(parents=True, exist_ok=True)
    runs = ROOT / "runs" / "notebooks"
    if runs.exists():
        aside = runs.with_name(f"notebooks.before-outputs-{time.strftime('%Y%m%d-%H%M%S')}")
        runs.rename(aside)
        print(f"moved {runs.relative_to(ROOT)} aside to {aside.relative_to(ROOT)}")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the outputs are of the CPU defaults, reproducibly
    os.environ.pop("BERT_TUTORIAL_FULL_RUN", None)
    # Progress bars show speed, not results: off in the kernel and in the commands it starts.
    os.environ.update(TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    for path in NOTEBOOKS:
        started = time.monotonic()
        print(f"running {path.name} ...", flush=True)
        nb = execute(path)
        for name, cell in figure_cells(nb):
            pngs = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
            if not pngs:
                raise SystemExit(f"{path.name}: the cell tagged {TAG}{name} drew no PNG")
            write_bytes_atomic(FIGURES / f"{name}.png", base64.b64decode(pngs[-1]))
            print(f"  wrote docs/figures/{name}.png")
        write_text_atomic(path, nbformat.writes(nb) + "\n")
        print(f"  stored its outputs ({time.monotonic() - started:.0f} s)")
    write_text_atomic(INPUTS, json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
