"""The on-disk format of pre-training shards, shared by the writer and the reader.

The layout is the one NVIDIA's BERT pre-training scripts use, so shards made by
their tools load here unchanged and ours load there. Keeping the schema in one
place means the writer cannot drift from what the reader validates.

| dataset              | dtype | shape  | meaning                                         |
|----------------------|-------|--------|-------------------------------------------------|
| input_ids            | int32 | (N, T) | already masked, padded with 0                   |
| input_mask           | int8  | (N, T) | 1 = real token                                  |
| segment_ids          | int8  | (N, T) | 0 = sentence A or padding, 1 = sentence B       |
| masked_lm_positions  | int32 | (N, P) | ascending, padded with 0 ([CLS] is never masked)|
| masked_lm_ids        | int32 | (N, P) | original token ids, padded with 0               |
| next_sentence_labels | int8  | (N,)   | 0 = B follows A, 1 = B is random                |
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .safe_io import write_bytes_atomic

#: Field name -> (numpy dtype written, number of dimensions).
FIELDS: dict[str, tuple[type, int]] = {
    "input_ids": (np.int32, 2),
    "input_mask": (np.int8, 2),
    "segment_ids": (np.int8, 2),
    "masked_lm_positions": (np.int32, 2),
    "masked_lm_ids": (np.int32, 2),
    "next_sentence_labels": (np.int8, 1),
}


class ShardError(ValueError):
    """A shard that cannot be trained on; the message names the file, the field and the row."""


def default_max_predictions(max_seq_length: int) -> int:
    """P for a given T: the usual 20 at 128 and 80 at 512, else 15 % of T rounded up."""
    return {128: 20, 512: 80}.get(max_seq_length, math.ceil(max_seq_length * 0.15))


@dataclass(frozen=True)
class ShardInfo:
    """What the reader needs to know about a shard without loading its contents."""

    path: Path
    num_samples: int
    max_seq_length: int
    max_predictions: int


def write_shard(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write one shard, gzip-compressed, with exactly the dtypes of the format table.

    The HDF5 file is built in memory and then written under a temporary name
    (``<shard>.tmp``), flushed and renamed, so a crash never leaves a half-written shard
    that looks complete; an error or Ctrl-C while writing removes the temporary file.
    HDF5 itself never writes to the disk: when its own writes failed (a full disk, a file
    size limit) it printed a dozen "Exception ignored" tracebacks and then crashed the
    process (a segfault, which hung a ``--workers`` pool). Python's writes fail cleanly,
    and a full disk is :class:`~bert_tutorial.safe_io.DiskFullError` naming the shard.
    The bytes are the same as HDF5's own file writes (the format does not depend on
    the driver); the price is one compressed shard in memory (a few MB to tens of MB,
    next to the uncompressed arrays that are in memory anyway).
    """
    path = Path(path)
    missing = set(FIELDS) - set(arrays)
    if missing:
        raise ShardError(f"{path}: cannot write shard, missing field(s) {sorted(missing)}")
    # "core" without a backing store: the file lives in memory only; the name is a label.
    with h5py.File(path.name, "w", driver="core", backing_store=False) as f:
        for name, (dtype, _) in FIELDS.items():
            # track_times=False (h5py's default, stated so it cannot change under us): no
            # timestamps in the file, so the same data give byte-identical shards.
            f.create_dataset(name, data=np.asarray(arrays[name], dtype=dtype),
                             compression="gzip", track_times=False)
        f.flush()
        image = f.id.get_file_image()
    write_bytes_atomic(path, image, tmp=path.with_name(path.name + ".tmp"),
                       intact="no incomplete shard is left")
    return path


def inspect_shard(path: str | Path) -> ShardInfo:
    """Open a shard and check its structure (fields, ranks, shapes) without reading the data.

    Raises :class:`ShardError` (a ``ValueError``) naming the file and the field, so a bad file is
    caught when the dataset is built rather than as a CUDA assert mid-epoch.
    """
    path = Path(path)
    with _open(path) as f:
        try:
            return _check_structure(path, f)
        # Corrupt metadata surfaces as h5py errors that do not name the file.
        except (OSError, RuntimeError, KeyError) as exc:
            raise ShardError(f"{path}: corrupt HDF5 file, could not read its structure ({exc})") from exc


def _open(path: Path) -> h5py.File:
    """Open a shard for reading; a file that is not HDF5, truncated or unreadable names itself."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ShardError(f"{path}: not a readable HDF5 file ({exc})") from exc


def _check_structure(path: Path, f: h5py.File) -> ShardInfo:
    """The structural checks of :func:`inspect_shard` on an open file."""
    for name, (_, ndim) in FIELDS.items():
        if name not in f:
            raise ShardError(f"{path}: missing field '{name}' (found {sorted(f.keys())})")
        ds = f[name]
        if not isinstance(ds, h5py.Dataset):
            raise ShardError(f"{path}: field '{name}' is a group, expected a dataset")
        if ds.ndim != ndim:
            raise ShardError(f"{path}: field '{name}' has shape {ds.shape}, expected {ndim} dimension(s)")
        if not np.issubdtype(ds.dtype, np.integer):
            raise ShardError(f"{path}: field '{name}' has dtype {ds.dtype}, expected an integer type")
    n, t = f["input_ids"].shape
    p = f["masked_lm_positions"].shape[1]
    if t == 0:
        raise ShardError(f"{path}: field 'input_ids' has sequence length 0 (shape {f['input_ids'].shape})")
    if p == 0:
        raise ShardError(
            f"{path}: field 'masked_lm_positions' has width 0 (shape {f['masked_lm_positions'].shape}): "
            "no token is masked, so the MLM loss would be 0 at every step"
        )
    expected = {"input_ids": (n, t), "input_mask": (n, t), "segment_ids": (n, t),
                "masked_lm_positions": (n, p), "masked_lm_ids": (n, p), "next_sentence_labels": (n,)}
    for name, shape in expected.items():
        if f[name].shape != shape:
            raise ShardError(
                f"{path}: field '{name}' has shape {f[name].shape}, expected {shape} "
                f"(length and width must match 'input_ids' {f['input_ids'].shape})"
            )
    if n == 0:
        raise ShardError(f"{path}: field 'input_ids' holds no samples")
    for name in FIELDS:
        _check_virtual_sources(path, name, f[name])
    return ShardInfo(path=path, num_samples=n, max_seq_length=t, max_predictions=p)


def _check_virtual_sources(path: Path, name: str, ds: h5py.Dataset) -> None:
    """Refuse a virtual dataset whose source file or dataset is missing.

    HDF5 reads a missing source as the fill value (zeros) without any error, so such
    a shard would train on all-[PAD] sequences. Relative source names are looked up
    where HDF5 looks: ``$HDF5_VDS_PREFIX``, the shard's folder, the working directory.
    """
    if not ds.is_virtual:
        return
    for source in ds.virtual_sources():
        if source.file_name == ".":
            found = source.dset_name in ds.file
        else:
            name_path = Path(source.file_name)
            prefixes = [os.environ.get("HDF5_VDS_PREFIX"), str(path.parent), os.getcwd()]
            candidates = [name_path] if name_path.is_absolute() else [
                Path(prefix) / name_path for prefix in prefixes if prefix]
            found = any(_has_dataset(c, source.dset_name) for c in candidates)
        if not found:
            raise ShardError(
                f"{path}: field '{name}' is a virtual dataset whose source "
                f"'{source.file_name}:{source.dset_name}' is missing; HDF5 would read it as zeros"
            )


def _has_dataset(path: Path, dataset: str) -> bool:
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return dataset in f
    except OSError:
        return False


def read_shard(info: ShardInfo, vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """Load a whole shard into memory and validate its values.

    Reading a shard at once (instead of row by row) is what makes gzip-compressed
    HDF5 fast: every chunk is decompressed once.
    """
    arrays: dict[str, np.ndarray] = {}
    with _open(info.path) as f:
        for name in FIELDS:
            try:
                arrays[name] = f[name][()]
            # A corrupt chunk or a field gone since inspection; h5py's message lacks the path.
            except (OSError, KeyError, RuntimeError, ValueError) as exc:
                raise ShardError(f"{info.path}: could not read field '{name}' ({exc})") from exc
    validate_values(info.path, arrays, vocab_size)
    return arrays


def validate_values(path: str | Path, arrays: dict[str, np.ndarray], vocab_size: int | None) -> None:
    """Check value ranges that would otherwise surface as a device-side assert or a wrong label."""
    t = arrays["input_ids"].shape[1]
    for name in ("input_ids", "masked_lm_ids"):
        values = arrays[name]
        if values.size and values.min() < 0:
            raise ShardError(f"{path}: field '{name}' has negative token ids (min {values.min()})")
        if values.size and vocab_size is not None and values.max() >= vocab_size:
            raise ShardError(
                f"{path}: field '{name}' has token id {int(values.max())} >= vocab size {vocab_size}"
                " (shard made with a different vocabulary?)"
            )
    pos = arrays["masked_lm_positions"]
    if pos.size and (pos.min() < 0 or pos.max() >= t):
        raise ShardError(
            f"{path}: field 'masked_lm_positions' has values outside [0, {t}) "
            f"(min {pos.min()}, max {pos.max()})"
        )
    for name in ("input_mask", "segment_ids", "next_sentence_labels"):
        values = arrays[name]
        if values.size and (values.min() < 0 or values.max() > 1):
            raise ShardError(f"{path}: field '{name}' must hold only 0 and 1")
    validate_masking(path, arrays)


def validate_masking(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Check what the masking means, not just its ranges; each would train silently wrong.

    * a row whose ``input_mask`` is all 0 has no token to attend to;
    * a masked position (non-zero entry of ``masked_lm_positions``) must be a real token
      (``input_mask`` 1), or the model learns to predict padding;
    * a position may appear once per row: twice would count its label twice.

    Vectorised over the shard: about 4 % on top of reading a gzip shard (see
    docs/faults.md). Positions are only sorted when they are not already in the format's
    canonical order (ascending, then zero padding), which is the rare case.
    """
    mask = arrays["input_mask"]
    empty = ~mask.any(axis=1)
    if empty.any():
        row = int(np.argmax(empty))
        raise ShardError(
            f"{path}: field 'input_mask' is all 0 in row {row} ({int(empty.sum())} such rows): "
            "a sequence without a single real token"
        )
    pos = arrays["masked_lm_positions"].astype(np.int64)
    used = pos != 0
    if not used.any():  # one row without a target happens; a whole shard without one is a mistake
        raise ShardError(
            f"{path}: field 'masked_lm_positions' is 0 in every row: no token is masked, so the "
            "MLM loss would be 0 in training and NaN in evaluation (shard made without masking?)"
        )
    at_padding = used & (np.take_along_axis(mask, pos, axis=1) == 0)
    if at_padding.any():
        row, slot = (int(i[0]) for i in np.nonzero(at_padding))
        raise ShardError(
            f"{path}: field 'masked_lm_positions' points at padding (input_mask 0) in row {row}: "
            f"position {int(pos[row, slot])} ({int(at_padding.sum())} such positions)"
        )
    _check_unique_positions(path, pos, used)


def _check_unique_positions(path: str | Path, pos: np.ndarray, used: np.ndarray) -> None:
    """Raise if a row repeats a masked position (padding zeros do not count)."""
    gap = used[:, 1:] & ~used[:, :-1]  # a position after padding
    not_rising = used[:, 1:] & (pos[:, 1:] <= pos[:, :-1])
    if not (gap.any() or not_rising.any()):
        return  # ascending and then padded: no repeats possible
    # Padding slots get distinct negative stand-ins so that only real positions can repeat.
    distinct = np.sort(np.where(used, pos, -1 - np.arange(pos.shape[1])), axis=1)
    repeated = distinct[:, 1:] == distinct[:, :-1]
    if repeated.any():
        row, slot = (int(i[0]) for i in np.nonzero(repeated))
        raise ShardError(
            f"{path}: field 'masked_lm_positions' repeats position {int(distinct[row, slot])} "
            f"in row {row}: each masked position may appear once"
        )
