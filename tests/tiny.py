"""A tiny data set and model config for training tests: seconds on a 2-core CPU (and a free port)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from shards import make_shard

from bert_tutorial.config import TrainConfig

VOCAB_SIZE = 50
SEQ_LENGTH = 16


def write_vocab(path: Path, size: int = VOCAB_SIZE) -> Path:
    """A toy ``vocab.txt`` whose special tokens sit where ``tests/shards.py`` puts them."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, size)]
    path.write_text("\n".join(tokens) + "\n")
    return path


def tiny_data(root: Path, train_samples: int = 64, eval_samples: int = 32,
              mask_fraction: float | None = None) -> dict[str, str]:
    """Two train shards and one eval shard of toy sequences, plus their vocabulary.

    ``mask_fraction``: masked tokens per sequence as create_data's rule counts them at that
    rate (what ``--masking dynamic`` checks); None: a random count, 0 included.
    """
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "eval").mkdir(parents=True, exist_ok=True)
    half = train_samples // 2
    for i in range(2):
        make_shard(root / "train" / f"train_{i}.hdf5", num_samples=half, seq_length=SEQ_LENGTH,
                   max_predictions=4, vocab_size=VOCAB_SIZE, seed=i, mask_fraction=mask_fraction)
    make_shard(root / "eval" / "eval_0.hdf5", num_samples=eval_samples, seq_length=SEQ_LENGTH,
               max_predictions=4, vocab_size=VOCAB_SIZE, seed=99, mask_fraction=mask_fraction)
    return {
        "train_data": str(root / "train"),
        "eval_data": str(root / "eval"),
        "vocab_file": str(write_vocab(root / "vocab.txt")),
    }


def tiny_config(root: Path, mask_fraction: float | None = None, **overrides: Any) -> TrainConfig:
    """A 1-layer, 32-wide BERT on ``tiny_data``; override anything per test."""
    data = tiny_data(root / "data", mask_fraction=mask_fraction)
    values: dict[str, Any] = dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=SEQ_LENGTH, batch_size=8, epochs=2, learning_rate=1e-3,
        output_dir=str(root / "run"), log_every_steps=1, device="cpu", seed=0, plots=False,
    )
    values.update(data)
    values.update(overrides)
    return TrainConfig(**values)


def hand_sample() -> dict[str, np.ndarray]:
    """[CLS] w5 [MASK] w7 [SEP] w9 w10 [SEP] + 2 padding; slots: [MASK]->w6, w9 kept, w10 for w8."""
    return {
        "input_ids": np.array([2, 5, 4, 7, 3, 9, 10, 3, 0, 0]),
        "input_mask": np.array([1] * 8 + [0] * 2),
        "segment_ids": np.array([0] * 5 + [1] * 3 + [0] * 2),
        "masked_lm_positions": np.array([2, 5, 6, 0]),
        "masked_lm_ids": np.array([6, 9, 8, 0]),
        "next_sentence_labels": np.array(1),
    }


def dies_at_step(n: int, step: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` (a train_step) that raises KeyboardInterrupt on its n-th call: a lost machine."""
    calls = {"n": 0}

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt(f"machine lost in step {n}")
        return step(*args, **kwargs)

    return wrapped


def fit_killed_in_step(monkeypatch: Any, cfg: TrainConfig, step: int) -> None:
    """``Trainer(cfg).fit()`` with the machine lost in optimizer step ``step`` (see
    :func:`dies_at_step`); the real step is back in place afterwards, for the resumed run."""
    import pytest

    from bert_tutorial.pretrain import trainer as training

    with monkeypatch.context() as patched:
        patched.setattr(training, "train_step", dies_at_step(step, training.train_step))
        with pytest.raises(KeyboardInterrupt):
            training.Trainer(cfg).fit()


def free_port() -> int:
    """A TCP port nobody listens on now, for a process group's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
