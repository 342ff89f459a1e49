"""Crash-safe checkpoints that ``transformers`` can load unchanged.

Each checkpoint is a folder ``checkpoints/checkpoint-<step>/`` holding
``model.safetensors`` + ``config.json`` (``save_pretrained`` of the bare
``BertForPreTraining``, so ``BertForPreTraining.from_pretrained(folder)`` works)
and ``training_state.pt`` (optimizer, scheduler, scaler, step, data position, RNG).

A checkpoint is written into a hidden temporary folder and renamed into place, and
rename is atomic: a crash mid-save leaves the previous checkpoint as the newest
complete one, never a half-written "latest". The training state holds only
tensors and plain Python types so it loads with ``torch.load(weights_only=True)``,
which cannot execute code hidden in a pickle.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import BertForPreTraining
from transformers.utils import logging as hf_logging

CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.pt"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"checkpoint-{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first; temporary folders of interrupted saves are ignored."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide save_pretrained's own progress bar, which would break the training bar."""
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def _fsync_tree(folder: Path) -> None:
    """Flush file contents to disk before the rename publishes them."""
    for path in folder.iterdir():
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())


def save_checkpoint(
    output_dir: str | Path,
    model: BertForPreTraining,
    state: dict[str, Any],
    step: int,
    keep_last: int = 2,
) -> Path:
    """Write model + training state for ``step`` atomically, then prune old checkpoints."""
    final = checkpoint_path(output_dir, step)
    if (final / STATE_FILE).is_file():
        return final  # this step is saved already (e.g. epoch end coincides with save_every)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with _quiet_transformers():
            model.save_pretrained(tmp)
        torch.save(state, tmp / STATE_FILE)
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a hard kill skips this; prune() catches that
        raise
    shutil.rmtree(final, ignore_errors=True)  # an incomplete folder left without a state file
    tmp.rename(final)
    prune_checkpoints(output_dir, keep_last)
    return final


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` checkpoints and drop leftovers of interrupted saves."""
    root = Path(output_dir) / CHECKPOINTS
    for stale in root.glob(".tmp-checkpoint-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if keep_last > 0:
        for old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)


def load_training_state(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The optimizer/scheduler/RNG state of a checkpoint, loaded without unpickling code."""
    path = Path(checkpoint) / STATE_FILE
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load training state ({exc})") from exc


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG state (dropout draws from it): the CPU's and its own GPU's, as tensors.

    Only this process's GPU: saving every visible GPU's state and restoring it with
    ``set_rng_state_all`` breaks on a machine with fewer GPUs.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore :func:`rng_state`; a GPU state is applied only when training on a GPU again."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if device.type == "cuda" and isinstance(cuda, torch.Tensor):
        torch.cuda.set_rng_state(cuda.cpu(), device)
