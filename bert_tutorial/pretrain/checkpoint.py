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

Every checkpoint proves itself: ``manifest.json``, written last, lists each file's
size and SHA-256. :func:`verify_checkpoint` checks them, so a truncated
``model.safetensors``, an empty ``config.json``, a half-copied folder or flipped
bytes are caught before a resume loads them, and :func:`newest_verified_checkpoint`
falls back to the newest checkpoint that is intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import BertForPreTraining
from transformers.utils import logging as hf_logging

from ..config import ConfigError
from ..safe_io import disk_full_error, fsync_dir, is_disk_full

CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.pt"
MANIFEST = "manifest.json"
#: Files without which a checkpoint cannot be resumed (``manifest.json`` lists them).
REQUIRED_FILES = ("model.safetensors", "config.json", STATE_FILE)
#: What the Trainer saves in ``training_state.pt`` and reads back on resume.
STATE_KEYS = ("optimizer", "scheduler", "scaler", "progress", "rng_per_rank", "samples_per_step")
_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, damaged, or refused for safety; the message says which."""


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
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:  # a user who turned the bars off keeps them off
            hf_logging.enable_progress_bar()


def _fsync_tree(folder: Path) -> None:
    """Flush file contents to disk before the rename publishes them."""
    for path in folder.iterdir():
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())


def file_sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks (checkpoint weights can be gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: str | Path, bad_steps: int = 0) -> None:
    """List every file of ``folder`` with its size and SHA-256 in ``manifest.json``.

    Written last: a folder whose manifest matches its files is complete and unaltered.
    Hashing re-reads what was just written (from the page cache): about a second per GB.
    ``bad_steps`` is the run's count of consecutive non-finite steps when it was saved: a
    checkpoint inside such a streak is kept, but never as the only one (``prune_checkpoints``).
    """
    folder = Path(folder)
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST
    }
    manifest = json.dumps({"format": 1, "files": files, "bad_steps": bad_steps}, indent=1,
                          sort_keys=True)
    (folder / MANIFEST).write_text(manifest + "\n")


def is_healthy(checkpoint: str | Path) -> bool:
    """Whether a checkpoint was saved outside a streak of non-finite steps (its weights are
    finite in any case: the Trainer does not save others). An unreadable manifest: no."""
    try:
        bad = json.loads((Path(checkpoint) / MANIFEST).read_text()).get("bad_steps", 0)
    except (OSError, ValueError, AttributeError):
        return False
    return bad == 0


def newest_healthy_checkpoint(output_dir: str | Path, found: list[Path] | None = None) -> Path | None:
    """The newest checkpoint saved before any non-finite step of its streak (see :func:`is_healthy`),
    among ``found`` (default: the run's checkpoints)."""
    found = list_checkpoints(output_dir) if found is None else found
    return next((p for p in reversed(found) if is_healthy(p)), None)


def verify_checkpoint(checkpoint: str | Path) -> None:
    """Raise :class:`CheckpointError` unless every file matches ``manifest.json``."""
    folder = Path(checkpoint)
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no {MANIFEST} (an incomplete copy, or saved by an "
                              "older version that wrote none)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{folder}: {MANIFEST} is unreadable ({exc})") from None
    if not (isinstance(files, dict) and all(
            isinstance(entry, dict) and isinstance(entry.get("bytes"), int)
            and isinstance(entry.get("sha256"), str) and "/" not in name and name not in ("", ".", "..")
            for name, entry in files.items())):  # a name with "/" would check a file elsewhere
        raise CheckpointError(f"{folder}: {MANIFEST} is not a manifest of this package (each file "
                              "needs its bytes and sha256)")
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise CheckpointError(f"{folder}: {MANIFEST} does not list {missing}")
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder}: {name} is missing (an incomplete copy?)")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(f"{path}: {size} bytes, the manifest says {expected['bytes']} "
                                  "(truncated or incompletely copied)")
        if file_sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path}: contents differ from the manifest's checksum "
                                  "(corrupted or altered since it was saved)")


def newest_verified_checkpoint(output_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that verifies, and the newer ones that did not, with why.

    Older checkpoints are not checked once one verifies: verification reads every byte.
    """
    rejected: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(output_dir)):
        try:
            verify_checkpoint(path)
        except CheckpointError as exc:
            rejected.append((path, str(exc)))
            continue
        return path, rejected
    return None, rejected


def set_aside(checkpoint: Path) -> Path:
    """Rename a checkpoint that failed verification out of the run's sight (kept for a look).

    It no longer counts as a checkpoint (``list_checkpoints`` ignores the name), so a
    later save of the same step cannot mistake it for its own and pruning skips it.
    """
    target = checkpoint.with_name(f"rejected-{checkpoint.name}")
    n = 1
    while target.exists():
        n += 1
        target = checkpoint.with_name(f"rejected-{checkpoint.name}-{n}")
    checkpoint.rename(target)
    return target


def save_checkpoint(
    output_dir: str | Path,
    model: BertForPreTraining,
    state: dict[str, Any],
    step: int,
    keep_last: int = 2,
    extra_files: Mapping[str, str] | None = None,
    bad_steps: int = 0,
) -> Path:
    """Write model + training state (+ ``extra_files``: name -> text) for ``step`` atomically.

    The manifest is written last, then the folder is renamed into place and old
    checkpoints are pruned. A full disk raises :class:`~bert_tutorial.safe_io.DiskFullError`, naming the
    previous checkpoint, which is intact.
    """
    final = checkpoint_path(output_dir, step)
    if (final / MANIFEST).is_file():
        return final  # this step is saved already (e.g. epoch end coincides with save_every)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:  # checkpoints/ gone mid-run: a link to a disk that was unmounted
        if is_disk_full(exc, final.parent.parent):
            raise disk_full_error(exc, final, "the previous checkpoints are intact",
                                  " to resume from the newest one") from exc
        raise CheckpointError(f"{final.parent}: cannot create the checkpoint's folder there "
                              f"({exc.strerror or exc}): is it on a disk that is not mounted? "
                              "Make it reachable and run the same command again to resume "
                              "from the newest checkpoint") from exc
    try:
        with _quiet_transformers():
            model.save_pretrained(tmp)
        torch.save(state, tmp / STATE_FILE)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        write_manifest(tmp, bad_steps)
        _fsync_tree(tmp)
    except BaseException as exc:
        full = is_disk_full(exc, tmp)  # before the cleanup frees the space again
        shutil.rmtree(tmp, ignore_errors=True)  # a hard kill skips this; prune() catches that
        if full:
            previous = latest_checkpoint(output_dir) or "(none yet)"
            raise disk_full_error(exc, final, f"the previous checkpoint {previous} is intact",
                                  " to resume from it") from exc
        raise
    shutil.rmtree(final, ignore_errors=True)  # an incomplete folder left without a manifest
    tmp.rename(final)
    fsync_dir(final.parent)
    prune_checkpoints(output_dir, keep_last)
    return final


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` checkpoints and drop leftovers of interrupted saves.

    The newest healthy checkpoint (:func:`is_healthy`) is kept too: when a run diverges,
    the newest ones all lie inside the non-finite streak, and pruning the last one from
    before it would leave the folder without a usable checkpoint.
    """
    root = Path(output_dir) / CHECKPOINTS
    for stale in root.glob(".tmp-checkpoint-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if keep_last > 0:
        found = list_checkpoints(output_dir)
        keep = set(found[-keep_last:])
        healthy = newest_healthy_checkpoint(output_dir, found)
        for old in found:
            if old not in keep and old != healthy:
                shutil.rmtree(old, ignore_errors=True)


def check_global_batch(checkpoint: Path, state: dict[str, Any], batch_size: int,
                       grad_accum_steps: int, world_size: int) -> None:
    """Refuse to resume with another global batch: the step count, LR schedule and data
    position are counted in optimizer steps of that many sequences."""
    saved = state["samples_per_step"]
    mine = batch_size * grad_accum_steps * world_size
    if saved != mine:
        per_process = saved / (batch_size * world_size)
        hint = (f"e.g. --grad-accum-steps {int(per_process)}" if per_process.is_integer()
                else "choose batch_size x grad_accum_steps x processes to match")
        raise ConfigError(
            f"{checkpoint}: trained with {saved} sequences per optimizer step, but this run has "
            f"{mine} (batch_size {batch_size} x grad_accum_steps {grad_accum_steps} x {world_size} "
            f"processes). The step count, LR schedule and data position are in optimizer steps: "
            f"keep the global batch ({hint})"
        )


def load_training_state(checkpoint: str | Path) -> dict[str, Any]:
    """The optimizer/scheduler/RNG state of a checkpoint, loaded without unpickling code.

    A file that holds anything but tensors and plain types is refused, and the message
    says why: unpickling it could run code hidden in the file. The Trainer never writes
    such a file, so it is not one of this package's checkpoints (or was altered).
    """
    path = Path(checkpoint) / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's text advises weights_only=False: not quoted
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is not None:
            raise CheckpointError(
                f"{path}: refused: this training state holds a Python object other than tensors, "
                f"numbers, strings, lists and dicts (it references {found.group(1)}). Unpickling "
                "such an object can run code stored in the file, and this package's checkpoints "
                "never contain one, so the file was not written by bert_tutorial or was altered "
                "since. Resume from a checkpoint this package saved."
            ) from None
        # Not an object the unpickler refused: the bytes themselves are wrong.
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\n", str(exc))
        raise _damaged(path, detail.group(1) if detail else "unreadable") from None
    except Exception as exc:
        raise _damaged(path, f"{type(exc).__name__}: {exc}") from exc
    # Checkpoints saved before 2026-11-25's DDP work lacked rng_per_rank and samples_per_step;
    # no user has one, so they are named here instead of failing later with a KeyError.
    missing = [key for key in STATE_KEYS if key not in state] if isinstance(state, dict) else STATE_KEYS
    if missing:
        raise CheckpointError(f"{path}: no {', '.join(missing)} (saved by an older bert_tutorial, "
                              "or not a training state of this package); resume from a checkpoint "
                              "this version saved, or choose another --output-dir to train again")
    return state


def _damaged(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path}: cannot load training state: the file is damaged or not "
                           f"a torch.save file ({reason})")


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
