"""Hand-made pre-training shards for tests: small, valid by default, easy to break on purpose.

Import as ``from shards import make_arrays, make_shard`` (pytest puts ``tests/`` on the
path), or use the ``shard_factory`` fixture from ``conftest.py``, which writes into
``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
from synthetic import TOY_IDS, synthetic_arrays

from bert_tutorial.hdf5_format import FIELDS, write_shard

#: Special ids of the toy vocabulary used by the generated shards.
PAD, CLS, SEP, MASK = 0, TOY_IDS.cls, TOY_IDS.sep, TOY_IDS.mask
FIRST_WORD_ID = TOY_IDS.first_word
#: Sentinel for ``make_shard(..., field=DROP)``: leave that field out of the file.
DROP = object()


def make_arrays(
    num_samples: int = 8,
    seq_length: int = 16,
    max_predictions: int = 4,
    vocab_size: int = 50,
    seed: int = 0,
    mask_fraction: float | None = None,
) -> dict[str, np.ndarray]:
    """Valid shard contents with the exact dtypes of the format table.

    Each sample is ``[CLS] A [SEP] B [SEP]`` with random length (5 to ``seq_length``),
    padding, 0 to ``max_predictions`` masked tokens (``mask_fraction``: as many as
    create_data's rule gives at that rate; ascending positions, padded with 0),
    and a random next-sentence label; special ids are the toy vocabulary's (``tiny.py``).
    The package's generator makes them, the one the benchmarks use, with a length and
    masking distribution that reaches the edge cases. Deterministic for a given ``seed``.
    """
    return synthetic_arrays(
        num_samples, seq_length, max_predictions, vocab_size=vocab_size, seed=seed,
        short_seq_prob=1.0, min_length=5, mask_fraction=mask_fraction, special_ids=TOY_IDS,
    )


def make_shard(path: str | Path, *, dtype: Any = None, **overrides: Any) -> Path:
    """Write a shard to ``path`` and return the path.

    ``overrides`` are either :func:`make_arrays` arguments (``num_samples``,
    ``seq_length``, ``max_predictions``, ``vocab_size``, ``seed``) or field names whose
    array replaces the generated one (any shape, to make broken files); a field set to
    :data:`DROP` is left out. ``dtype`` writes every field with that dtype (e.g.
    ``np.int64``, as other tools do) instead of the table's. Without ``dtype`` or a dropped
    field the real writer, :func:`bert_tutorial.hdf5_format.write_shard`, is used.
    """
    path = Path(path)
    gen_keys = ("num_samples", "seq_length", "max_predictions", "vocab_size", "seed", "mask_fraction")
    arrays: dict[str, Any] = make_arrays(
        **{k: overrides.pop(k) for k in gen_keys if k in overrides}
    )
    unknown = set(overrides) - set(FIELDS)
    if unknown:
        raise TypeError(f"make_shard: unknown override(s) {sorted(unknown)}")
    arrays.update(overrides)
    if dtype is None and not any(v is DROP for v in arrays.values()):
        return write_shard(path, arrays)
    with h5py.File(path, "w") as f:
        for name, values in arrays.items():
            if values is not DROP:
                f.create_dataset(name, data=np.asarray(values, dtype=dtype or FIELDS[name][0]))
    return path
