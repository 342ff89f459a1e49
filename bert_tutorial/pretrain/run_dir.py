"""One output folder, one run: the lock, the run's metadata, and the decision to resume.

A run folder holds ``train_config.json`` (what the run is), ``data.json`` (the shards
it started on: names, sizes, rows; and the SHA-256 of its vocabulary and starting model),
``metrics.jsonl`` and ``checkpoints/``. Everything
that could silently mix two runs in one folder is refused here, before anything is
written:

* another process training into the folder (an exclusive ``flock`` on ``.lock``, held
  for the run's life and released by the OS when the process dies, however it dies);
* checkpoints or metrics without a readable ``train_config.json`` (whose run are they?);
* a config that differs from the stored one in a field that changes results;
* data that differ from the recorded data (unless ``allow_data_change``);
* checkpoints that fail their manifest: the run falls back, with a warning, to the
  newest one that verifies; none verifying is an error, never a silent fresh start.

Metadata are written atomically (:func:`bert_tutorial.safe_io.write_text_atomic`), and
only after the Trainer was fully built, so a rejected value leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from ..config import TrainConfig, default_learning_rate
from ..safe_io import write_text_atomic
from ..warn import warn_caller
from . import checkpoint as ckpt
from .distributed import barrier, decided_by_rank0
from .metrics import METRICS_FILE, read_metrics

try:
    import fcntl
except ImportError:  # Windows: no flock; the folder is then not protected against a second run
    fcntl = None  # type: ignore[assignment]

CONFIG_FILE = "train_config.json"
DATA_FILE = "data.json"
LOCK_FILE = ".lock"
#: Fields that may change between a run and its resumption without changing its results.
#: (``epochs`` and ``max_steps`` may not: they set the length of the LR schedule.)
RESUMABLE_CHANGES = frozenset(
    {"resume", "num_workers", "output_dir", "device", "log_every_steps", "save_every_steps",
     "keep_last_checkpoints", "eval_max_batches", "eval_every_steps", "max_bad_steps", "plots",
     # the hardware may change between a run and its resumption (CPU -> T4: fp32 -> fp16)
     "precision", "fused_adamw", "compile", "attn_implementation",
     # speed switches: the same method (equal in fp32; bf16 LayerNorm outputs round otherwise)
     "compile_mode", "fused_qkv", "half_precision_layernorm", "fold_clipping",
     # may change with the number of processes, as long as the global batch stays (checked on load)
     "batch_size", "grad_accum_steps",
     # the data may move (another checkout, another machine): their contents are compared
     # with data.json instead
     "train_data", "eval_data", "allow_data_change", "vocab_file", "model_name_or_path"}
)


class RunDirError(ValueError):
    """The output folder cannot be used for this run; the message says why and what to do."""


class RunLockedError(RunDirError):
    """Another run (another process, or a Trainer still training here) holds the folder."""


class DataChangedError(RunDirError):
    """A resumed run's shards differ from those it started with."""


# --- the lock ----------------------------------------------------------------------------


def _read_holder(fd: int) -> str:
    """The holder's line ("pid ... on host, started ..."). A holder writes it just after
    locking and empties the file when it lets go, so a run that lost the race by
    microseconds may find the file still empty: wait a moment for the line."""
    for _ in range(20):
        line = os.pread(fd, 4096, 0).decode(errors="replace")
        if line.endswith("\n"):
            return line.strip()
        time.sleep(0.05)
    return line.strip() or "pid unknown"


def _lock_fd(path: Path) -> int:
    """Open and lock ``path`` (flock, non-blocking); record who holds it. Raises if taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise RunLockedError(
            f"{path.parent}: in use by another run ({holder}); wait for it to finish, stop it, "
            "or choose another --output-dir"
        ) from None
    except OSError as exc:  # a file system without locks (some network mounts)
        warn_caller(f"{path}: cannot lock ({exc.strerror}); make sure no other run uses "
                    "this folder")
        return fd
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {stamp}\n".encode(), 0)
    return fd


class RunLock:
    """Exclusive use of a run folder by one Trainer of one process.

    The OS releases a ``flock`` when its process ends (crash and ``kill -9`` included),
    so a stale lock never blocks a restart. Within one process a new Trainer takes the
    folder over from an idle one (a notebook cell run twice); the old Trainer can then
    no longer train there.
    """

    _held: ClassVar[dict[str, RunLock]] = {}

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None
        self.training = False
        self.taken_over = False

    @property
    def _key(self) -> str:
        return str(self.folder.resolve())

    def acquire(self) -> None:
        if self._fd is not None:
            return
        if self.taken_over:
            raise RunLockedError(f"{self.folder}: a newer Trainer of this process opened this "
                                 "folder; train with that one (or create a new Trainer)")
        other = RunLock._held.get(self._key)
        if other is not None:
            if other.training:
                raise RunLockedError(f"{self.folder}: a Trainer of this process (pid "
                                     f"{os.getpid()}) is training into it")
            self._fd, other._fd, other.taken_over = other._fd, None, True
        else:
            self._fd = _lock_fd(self.folder / LOCK_FILE)
        RunLock._held[self._key] = self

    def release(self) -> None:
        if self._fd is None:
            return
        if RunLock._held.get(self._key) is self:
            del RunLock._held[self._key]
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # no stale holder line for the next run to report
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    @classmethod
    def drop_inherited(cls) -> None:
        """In a forked child (a DataLoader worker): close the lock descriptors it inherited.

        A flock belongs to the open file description, which a fork shares with the child.
        A worker keeping it would hold the folder locked after its Trainer released it (the
        persistent workers of a finished Trainer live on while the Trainer is referenced,
        as ``trainer`` in a notebook), and the next Trainer of this process would be refused
        with "in use by another run (pid unknown)". Closing only drops the child's
        reference: the parent's lock stands (``LOCK_UN`` here would release it for the
        parent too).
        """
        for lock in cls._held.values():
            if lock._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(lock._fd)
                lock._fd = None
        cls._held.clear()


if hasattr(os, "register_at_fork"):  # POSIX; subprocesses (fork + exec) close the descriptor anyway
    os.register_at_fork(after_in_child=RunLock.drop_inherited)


# --- what the run was started with -------------------------------------------------------


def data_text(data: dict[str, Any]) -> str:
    """``data.json``'s contents, the same beside the checkpoints and inside each one."""
    return json.dumps(data, indent=1) + "\n"


def data_record(datasets: dict[str, Any]) -> dict[str, Any]:
    """Names, sizes and rows of each split's shards (``{"train": dataset, "eval": ...}``)."""
    record: dict[str, Any] = {}
    for split, data in datasets.items():
        if data is None:
            record[split] = None
            continue
        record[split] = {
            "shards": [[info.path.name, info.path.stat().st_size, info.num_samples]
                       for info in data.shards],
            "rows": len(data), "max_seq_length": data.max_seq_length,
            "max_predictions": data.max_predictions,
        }
    return record


def inputs_record(vocab_file: str | Path, model_name_or_path: str | None) -> dict[str, Any]:
    """SHA-256 of the vocabulary and of the starting model's files (a hub name as it is).

    Resuming compares these, not the paths, so a run resumes from a moved or re-cloned
    checkout (whose default paths differ) and still refuses another vocabulary or model.
    """
    model: str | None = model_name_or_path
    if model_name_or_path and Path(model_name_or_path).is_dir():
        files = sorted(p for p in Path(model_name_or_path).iterdir()
                       if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
        model = "sha256:" + ",".join(f"{p.name}={ckpt.file_sha256(p)}" for p in files)
    return {"vocab_sha256": ckpt.file_sha256(Path(vocab_file)), "model": model}


def inputs_differences(was: dict[str, Any], now: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """Whether the vocabulary or the starting model differ from the run's.

    By contents (two :func:`inputs_record` results). A starting model whose contents
    cannot be compared now (its folder is gone, or one side is a hub name) is only warned
    about: resuming reads the weights from the checkpoint, not from it.
    """
    out = ["vocab_file (contents differ)"] if was.get("vocab_sha256") != now.get("vocab_sha256") else []
    old, new = was.get("model"), now.get("model")
    hashed = [str(m).startswith("sha256:") for m in (old, new)]
    if all(hashed) and old != new:
        out.append("model_name_or_path (contents differ)")
    elif not any(hashed) and old != new:
        out.append(f"model_name_or_path ({old} -> {new})")
    elif any(hashed) and not all(hashed):
        warn_caller(f"model_name_or_path: cannot compare {mine.get('model_name_or_path')} with the "
                    "model the run started from; resuming from the checkpoint's weights")
    return out


def _is_data_record(record: dict[str, Any]) -> bool:
    """Whether ``record`` has the shape :func:`data_record` writes (what the comparison reads)."""
    for split, value in record.items():
        if split == "inputs" or value is None:
            continue
        if not (isinstance(value, dict) and isinstance(value.get("shards"), list)
                and all(isinstance(s, list) and len(s) == 3 and isinstance(s[0], str)
                        for s in value["shards"])):
            return False
    return True


def data_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two :func:`data_record` results."""
    out = []
    for split in sorted((set(old) | set(new)) - {"inputs"}):
        a, b = old.get(split), new.get(split)
        if a == b:
            continue
        if a is None or b is None:
            out.append(f"{split}: {'none' if a is None else 'shards'} -> {'none' if b is None else 'shards'}")
            continue
        was = {s[0]: s[1:] for s in a["shards"]}
        now = {s[0]: s[1:] for s in b["shards"]}
        added, removed = sorted(set(now) - set(was)), sorted(set(was) - set(now))
        changed = [f"{n} ({was[n][0]} -> {now[n][0]} bytes, {was[n][1]} -> {now[n][1]} rows)"
                   for n in sorted(set(was) & set(now)) if was[n] != now[n]]
        for label, names in (("added", added), ("removed", removed), ("changed", changed)):
            if names:
                out.append(f"{split} shards {label}: {', '.join(names)}")
        if not (added or removed or changed):
            out.append(f"{split}: {a['rows']} -> {b['rows']} rows")
    return out


def config_differences(existing: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """Fields that differ and would change the run's results (see RESUMABLE_CHANGES).

    Values are compared as the run uses them: ``--learning-rate 0.001`` is the default a
    from-scratch run chose by itself (None), and ``--max-grad-norm inf`` is None (no clipping).
    """
    existing, mine = _effective(existing), _effective(mine)
    return sorted(
        k for k in set(existing) | set(mine)
        if k not in RESUMABLE_CHANGES and json.dumps(existing.get(k)) != json.dumps(mine.get(k))
    )


#: Each TrainConfig field's default, as a stored config spells it.
_DEFAULTS = TrainConfig().to_dict()


def _effective(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a config as a dict) with the defaults that None stands for filled in.

    A field the stored config lacks was added to ``TrainConfig`` after the run started: the
    run had its default (e.g. ``objective`` "mlm+nsp"), so a run of an older version resumes.
    """
    values = {**_DEFAULTS, **values}
    if values.get("learning_rate") is None:  # TrainConfig.lr's rule, for a stored dict
        values["learning_rate"] = default_learning_rate(values.get("model_name_or_path"))
    if values.get("max_grad_norm") is None:
        values["max_grad_norm"] = float("inf")
    return values


# --- the folder ---------------------------------------------------------------------------


def _is_run(folder: Path) -> bool:
    """Whether ``folder`` is a run's folder: it holds a run's config or its checkpoints."""
    return (folder / CONFIG_FILE).is_file() or bool(ckpt.list_checkpoints(folder))


def _is_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` is one checkpoint of a run (``checkpoints/checkpoint-N``)."""
    return (folder / ckpt.STATE_FILE).is_file() or (folder / ckpt.MANIFEST).is_file()


class RunDir:
    """The run folder as one Trainer uses it: :meth:`open` before building, :meth:`commit` after.

    Under DDP only rank 0 locks, reads and writes; it broadcasts its decision (the
    checkpoint to resume, or the error) so every rank resumes the same checkpoint or
    fails with the same message instead of hanging in the next collective.
    """

    def __init__(self, folder: str | Path, is_main: bool = True) -> None:
        self.folder = Path(folder)
        self.is_main = is_main
        self.lock = RunLock(self.folder)
        self.config_file = self.folder / CONFIG_FILE
        self.data_file = self.folder / DATA_FILE

    def open(self, cfg: TrainConfig, data: dict[str, Any], first_save: int | None = None) -> Path | None:
        """Lock the folder and check it; return the checkpoint to resume (a collective).

        ``first_save`` is the step of the run's first scheduled checkpoint (the first
        ``save_every_steps`` or epoch end): a log beyond it proves a checkpoint was saved.
        """
        try:
            return decided_by_rank0(lambda: self._open(cfg, data, first_save), self.is_main,
                                    RunDirError)
        except Exception:
            self.lock.release()  # (held by rank 0 only)
            raise

    def _open(self, cfg: TrainConfig, data: dict[str, Any], first_save: int | None) -> Path | None:
        self._make_folder_and_lock()
        self._check_checkpoints_folder()
        existing = self._read_config()
        if existing is None or not self._holds_a_run():
            return None  # no checkpoint and no metrics yet: only a --dry-run wrote here
        metrics = self.folder / METRICS_FILE
        # Every line a record (read_metrics checks), before resuming reads or rewrites them.
        records = read_metrics(metrics) if metrics.is_file() else []
        differ = config_differences(existing, cfg.to_dict())
        if differ:
            raise RunDirError(f"{self.config_file}: output folder holds a different run (fields "
                              f"{differ} differ); choose another --output-dir (that run stays "
                              "as it is), or resume it with its settings")
        if not ckpt.list_checkpoints(self.folder):
            self._refuse_history_without_checkpoints(existing, cfg, first_save, records)
            return None  # killed before its first checkpoint: the same steps are logged again
        if not cfg.resume:
            raise RunDirError(f"{self.folder}: holds checkpoints of this run but resume=False; "
                              "pass resume=True to continue it or choose another output_dir")
        self._check_data(data, cfg)  # before reading checkpoints
        return self._choose_checkpoint()

    def _make_folder_and_lock(self) -> None:
        """Create the folder and take the lock; both fail early on a read-only folder."""
        if self.folder.exists() and not self.folder.is_dir():
            raise RunDirError(f"{self.folder}: output_dir is a file, not a folder; "
                              "choose another --output-dir")
        self._refuse_nested_runs()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except OSError as exc:
            raise RunDirError(f"{self.folder}: cannot write into the output folder "
                              f"({exc.strerror}); choose a writable --output-dir") from exc

    def _refuse_nested_runs(self) -> None:
        """Refuse an output folder inside another run's folder, or around one.

        ``--output-dir runs/x/checkpoints/checkpoint-N`` trained into the checkpoint and
        rewrote its ``train_config.json`` and ``data.json``; the run it belongs to then
        rejected it and resumed from an older one. A run around other runs would make
        them lie inside it, which this very check would then refuse.
        """
        if _is_checkpoint(self.folder):
            raise RunDirError(f"{self.folder}: a checkpoint folder, not a run folder; pass the "
                              "run's folder as --output-dir to resume it, or choose a new one "
                              "(--model-name-or-path starts a new run from a checkpoint)")
        here = self.folder.resolve()
        for parent in here.parents:
            if _is_run(parent) or _is_checkpoint(parent):
                raise RunDirError(f"{self.folder}: lies inside the run folder {parent}, where a "
                                  "run would mix its files with that run's; choose an "
                                  "--output-dir outside it")
        if here.is_dir():
            inner = next((p for p in sorted(here.iterdir()) if p.name != ckpt.CHECKPOINTS
                          and p.is_dir() and (_is_run(p) or _is_checkpoint(p))), None)
            if inner is not None:
                raise RunDirError(f"{self.folder}: holds the run folder {inner}; a run here would "
                                  "enclose it: choose a new --output-dir (e.g. beside it)")

    def _check_checkpoints_folder(self) -> None:
        """Refuse a ``checkpoints`` that cannot be reached: the run would look new and start over.

        A symbolic link to a disk that is not mounted looks like no checkpoints at all; the
        run restarted from step 0, cut its log and failed at its first save.
        """
        root = self.folder / ckpt.CHECKPOINTS
        if root.is_symlink() and not root.exists():
            raise RunDirError(
                f"{root}: a symbolic link to {os.readlink(root)}, which does not exist (a disk "
                "that is not mounted?); make it reachable and run again, or choose another "
                "--output-dir")
        if root.exists() and not root.is_dir():
            raise RunDirError(f"{root}: not a folder; move it away or choose another --output-dir")
        if root.is_dir():
            try:
                next(iter(root.iterdir()), None)
            except OSError as exc:
                raise RunDirError(f"{root}: cannot be read ({exc.strerror}); make it readable "
                                  "or choose another --output-dir") from exc

    def _refuse_history_without_checkpoints(self, existing: dict[str, Any], cfg: TrainConfig,
                                            first_save: int | None,
                                            records: list[dict[str, Any]]) -> None:
        """Refuse to start over a run whose log proves it had checkpoints that are gone now.

        A run killed before its first checkpoint starts again and logs the same steps again;
        but a log past the first scheduled save means checkpoints were written and are now
        deleted or out of reach. Starting again would cut that log (the history), and a
        checkpoint folder that comes back later would resume into a log with a gap.
        ``records`` are the folder's ``metrics.jsonl`` records (none without the file).
        """
        metrics = self.folder / METRICS_FILE
        if first_save is None or not records:
            return
        saves = [s for s in (existing.get("save_every_steps"), cfg.save_every_steps)
                 if isinstance(s, int) and not isinstance(s, bool) and s > 0]
        first = min([first_save, *saves])
        last = max(r["step"] for r in records)
        if last > first:
            raise RunDirError(
                f"{metrics}: logs this run up to step {last}, but {self.folder / ckpt.CHECKPOINTS} "
                f"holds no checkpoint (deleted, or on a disk that is not mounted?), though one was "
                f"saved by step {first}; starting over would replace that history. Restore the "
                "checkpoints, or choose another --output-dir; to start this run over, delete "
                f"{metrics} first")

    def _holds_a_run(self) -> bool:
        metrics = self.folder / METRICS_FILE
        return bool(ckpt.list_checkpoints(self.folder)) or (
            metrics.is_file() and metrics.stat().st_size > 0)

    def _read_config(self) -> dict[str, Any] | None:
        """The stored config; None for a fresh folder. Refuses a run it cannot identify."""
        found = self._checkpoint_copy(CONFIG_FILE)
        copy = f"; a copy is in {found}" if found else ""
        if not self.config_file.exists():
            if self._holds_a_run():
                raise RunDirError(
                    f"{self.folder}: holds checkpoints or metrics but no {CONFIG_FILE}, so they "
                    f"cannot be matched to this run; restore the file{copy}, or choose another "
                    "--output-dir"
                )
            return None
        try:
            existing = json.loads(self.config_file.read_text())
            if not isinstance(existing, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{self.config_file}: unreadable ({exc}); the folder's run cannot "
                              f"be identified: restore the file{copy}, or choose another "
                              "--output-dir") from exc
        return existing

    def _choose_checkpoint(self) -> Path | None:
        """The newest checkpoint that verifies; newer broken ones are set aside, with a warning."""
        found, rejected = ckpt.newest_verified_checkpoint(self.folder)
        if found is None and rejected:
            reasons = "\n  ".join(reason for _, reason in rejected)
            raise ckpt.CheckpointError(
                f"{self.folder}: no checkpoint verifies, so the run cannot resume:\n  {reasons}\n"
                "delete the broken checkpoints to start over, or choose another --output-dir"
            )
        for path, reason in rejected:
            moved = ckpt.set_aside(path)
            warn_caller(f"skipping damaged checkpoint: {reason}; moved to {moved}; resuming "
                        f"from {found}")
        return found

    def _checkpoint_copy(self, name: str) -> Path | None:
        """The newest checkpoint's copy of ``name`` (each keeps the config and data.json)."""
        latest = ckpt.latest_checkpoint(self.folder)
        return latest / name if latest is not None and (latest / name).is_file() else None

    def _check_data(self, data: dict[str, Any], cfg: TrainConfig) -> None:
        record = self.data_file if self.data_file.exists() else self._checkpoint_copy(DATA_FILE)
        recorded = None
        if record is not None:
            try:
                recorded = json.loads(record.read_text())
            except (OSError, ValueError) as exc:
                raise RunDirError(f"{record}: unreadable ({exc}); restore it, or pass "
                                  "--allow-data-change to resume with the current data") from exc
        if recorded is None:
            # Runs record their data beside the checkpoints and in them, so both were lost;
            # resuming without a record would skip the check silently.
            if not cfg.allow_data_change:
                raise DataChangedError(
                    f"{self.data_file}: missing, so the shards cannot be checked against those the "
                    "run started with; restore the file, or pass --allow-data-change "
                    "(allow_data_change=True) to resume with the current data")
            warn_caller(f"{self.data_file}: missing; resuming with the current data unchecked")
            return
        if not isinstance(recorded, dict) or not isinstance(recorded.get("inputs"), dict):
            # data.json before 2026-11-26 recorded paths, not the files' contents; no user has one
            raise RunDirError(f"{record}: no \"inputs\" record (written by an older bert_tutorial, "
                              "which did not hash the vocabulary and model), so this run cannot be "
                              "checked; choose another --output-dir to train again")
        other = inputs_differences(recorded["inputs"], data["inputs"], cfg.to_dict())
        if other:  # another vocabulary or starting model is another run, whatever the flags
            raise RunDirError(f"{self.folder}: holds a run made with another {', '.join(other)}; "
                              "choose another --output-dir (that run stays as it is), or resume "
                              "it with its own files")
        if not _is_data_record(recorded):
            if not cfg.allow_data_change:
                raise RunDirError(f"{record}: not a data record of this package (each split needs "
                                  "its shards as [name, bytes, rows]); restore it (a copy is in "
                                  "every checkpoint), or pass --allow-data-change to resume with "
                                  "the current data")
            warn_caller(f"{record}: not a data record; resuming with the current data unchecked")
            return
        changes = data_differences(recorded, data)
        if not changes:
            return
        what = "; ".join(changes)
        if not cfg.allow_data_change:
            train = recorded.get("train") != data.get("train")
            why = ("The step count, LR schedule and data position depend on them" if train else
                   "Its evaluation curve would mix two eval sets")
            raise DataChangedError(
                f"{self.folder}: the data differ from those the run started with ({what}). {why}: "
                "resume with the original shards, or pass --allow-data-change "
                "(allow_data_change=True) to go on"
            )
        warn_caller(f"{self.folder}: resuming on changed data ({what}); the LR schedule and "
                    "epoch length follow the new data")

    def commit(self, cfg: TrainConfig, data: dict[str, Any], fresh: bool) -> None:
        """Record the run's config and data (rank 0), once the Trainer is fully built."""
        if self.is_main:
            cfg.to_json(self.config_file)
            write_text_atomic(self.data_file, data_text(data))
            if fresh:
                (self.folder / METRICS_FILE).unlink(missing_ok=True)
        barrier()

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """Hold the folder while training; release it when ``fit`` ends, however it ends."""
        if self.is_main:
            self.lock.acquire()
            self.lock.training = True
        try:
            yield
        finally:
            self.lock.training = False
            self.lock.release()
