"""The run's metrics history: one JSON object per line in ``metrics.jsonl``.

JSON Lines survive a crash (every line is complete and flushed as soon as it is
written) and are trivial to load into pandas or to plot. Records have a
``kind``: ``"train"`` (averaged over the last logging window) or ``"eval"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..safe_io import disk_full_error, is_disk_full, write_text_atomic

METRICS_FILE = "metrics.jsonl"


class MetricsError(ValueError):
    """A line of ``metrics.jsonl`` that is not a record (the message names file and line)."""


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics file (or of ``<folder>/metrics.jsonl``).

    A process killed while writing leaves a partial last line; it is skipped (the
    resumed run logs that step again), while a bad line anywhere else is an error.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if i < len(lines) - 1:
                raise MetricsError(f"{path}: line {i + 1} is not JSON ({exc}); repair or remove "
                                   "that line") from exc
            continue
        # Every reader (resume, the curves) takes "kind" and "step" from each record.
        step = record.get("step") if isinstance(record, dict) else None
        if not (isinstance(record, dict) and isinstance(record.get("kind"), str)
                and isinstance(step, int) and not isinstance(step, bool) and step >= 0):
            raise MetricsError(f"{path}: line {i + 1} is not a record of this log (a JSON object "
                               "with a \"kind\" and a \"step\" >= 0): "
                               f"{line.strip()[:80]}; repair or remove that line")
        records.append(record)
    return records


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one line; a full disk raises :class:`~bert_tutorial.safe_io.DiskFullError` (a partial line is skipped
    by :func:`read_metrics` and dropped on resume)."""
    try:
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as exc:
        if is_disk_full(exc, path.parent):
            raise disk_full_error(exc, path, "the checkpoints are intact",
                                  " to resume from the newest one") from exc
        raise


def has_eval_at(path: Path, step: int) -> bool:
    """Whether the log holds an evaluation of ``step`` (False for a missing file)."""
    return path.exists() and any(isinstance(r, dict) and r.get("kind") == "eval" and r.get("step") == step
                                 for r in read_metrics(path))


def truncate_after(path: Path, step: int) -> None:
    """Drop records logged after ``step``: a resumed run will log those steps again."""
    if path.exists():
        kept = [r for r in read_metrics(path) if r["step"] <= step]
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
