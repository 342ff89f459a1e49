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
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

#: Field name -> (numpy dtype written, number of dimensions).
FIELDS: dict[str, tuple[type, int]] = {
    "input_ids": (np.int32, 2),
    "input_mask": (np.int8, 2),
    "segment_ids": (np.int8, 2),
    "masked_lm_positions": (np.int32, 2),
    "masked_lm_ids": (np.int32, 2),
    "next_sentence_labels": (np.int8, 1),
}
SEQUENCE_FIELDS = ("input_ids", "input_mask", "segment_ids")
PREDICTION_FIELDS = ("masked_lm_positions", "masked_lm_ids")


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


def write_shard(path: str | Path, arrays: dict[str, np.ndarray], compression: str = "gzip") -> Path:
    """Write one shard with exactly the dtypes of the format table.

    The file is written under a temporary name and renamed, so a crash never
    leaves a half-written shard that looks complete.
    """
    path = Path(path)
    missing = set(FIELDS) - set(arrays)
    if missing:
        raise ValueError(f"{path}: cannot write shard, missing field(s) {sorted(missing)}")
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        for name, (dtype, _) in FIELDS.items():
            # track_times=False (h5py's default, stated so it cannot change under us): no
            # timestamps in the file, so the same data gives byte-identical shards.
            f.create_dataset(
                name, data=np.asarray(arrays[name], dtype=dtype), compression=compression, track_times=False
            )
    tmp.replace(path)
    return path


def inspect_shard(path: str | Path) -> ShardInfo:
    """Open a shard and check its structure (fields, ranks, shapes) without reading the data.

    Raises ``ValueError`` naming the file and the offending field, so a bad file is
    caught when the dataset is built rather than as a CUDA assert mid-epoch.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:  # not HDF5, truncated, or unreadable
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        try:
            return _check_structure(path, f)
        # Corrupt metadata surfaces as h5py errors that do not name the file.
        except (OSError, RuntimeError, KeyError) as exc:
            raise ValueError(f"{path}: corrupt HDF5 file, could not read its structure ({exc})") from exc


def _check_structure(path: Path, f: h5py.File) -> ShardInfo:
    """The structural checks of :func:`inspect_shard` on an open file."""
    for name, (_, ndim) in FIELDS.items():
        if name not in f:
            raise ValueError(f"{path}: missing field '{name}' (found {sorted(f.keys())})")
        ds = f[name]
        if not isinstance(ds, h5py.Dataset):
            raise ValueError(f"{path}: field '{name}' is a group, expected a dataset")
        if ds.ndim != ndim:
            raise ValueError(f"{path}: field '{name}' has shape {ds.shape}, expected {ndim} dimension(s)")
        if not np.issubdtype(ds.dtype, np.integer):
            raise ValueError(f"{path}: field '{name}' has dtype {ds.dtype}, expected an integer type")
    n, t = f["input_ids"].shape
    p = f["masked_lm_positions"].shape[1]
    expected = {**{k: (n, t) for k in SEQUENCE_FIELDS}, **{k: (n, p) for k in PREDICTION_FIELDS}}
    expected["next_sentence_labels"] = (n,)
    for name, shape in expected.items():
        if f[name].shape != shape:
            raise ValueError(
                f"{path}: field '{name}' has shape {f[name].shape}, expected {shape} "
                f"(length and width must match 'input_ids' {f['input_ids'].shape})"
            )
    if n == 0:
        raise ValueError(f"{path}: field 'input_ids' holds no samples")
    return ShardInfo(path=path, num_samples=n, max_seq_length=t, max_predictions=p)


def read_shard(info: ShardInfo, vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """Load a whole shard into memory and validate its values.

    Reading a shard at once (instead of row by row) is what makes gzip-compressed
    HDF5 fast: every chunk is decompressed once.
    """
    arrays: dict[str, np.ndarray] = {}
    try:
        f = h5py.File(info.path, "r")
    except OSError as exc:  # truncated or replaced since inspection
        raise ValueError(f"{info.path}: not a readable HDF5 file ({exc})") from exc
    with f:
        for name in FIELDS:
            try:
                arrays[name] = f[name][()]
            # A corrupt chunk or a field gone since inspection; h5py's message lacks the path.
            except (OSError, KeyError, RuntimeError, ValueError) as exc:
                raise ValueError(f"{info.path}: could not read field '{name}' ({exc})") from exc
    validate_values(info.path, arrays, vocab_size)
    return arrays


def validate_values(path: str | Path, arrays: dict[str, np.ndarray], vocab_size: int | None) -> None:
    """Check value ranges that would otherwise surface as a device-side assert or a wrong label."""
    t = arrays["input_ids"].shape[1]
    for name in ("input_ids", "masked_lm_ids"):
        values = arrays[name]
        if values.size and values.min() < 0:
            raise ValueError(f"{path}: field '{name}' has negative token ids (min {values.min()})")
    if vocab_size is not None:
        for name in ("input_ids", "masked_lm_ids"):
            top = int(arrays[name].max()) if arrays[name].size else 0
            if top >= vocab_size:
                raise ValueError(
                    f"{path}: field '{name}' has token id {top} >= vocab size {vocab_size}"
                    " (shard made with a different vocabulary?)"
                )
    pos = arrays["masked_lm_positions"]
    if pos.size and (pos.min() < 0 or pos.max() >= t):
        raise ValueError(
            f"{path}: field 'masked_lm_positions' has values outside [0, {t}) "
            f"(min {pos.min()}, max {pos.max()})"
        )
    for name in ("input_mask", "segment_ids", "next_sentence_labels"):
        values = arrays[name]
        if values.size and (values.min() < 0 or values.max() > 1):
            raise ValueError(f"{path}: field '{name}' must hold only 0 and 1")
