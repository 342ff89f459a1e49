"""Shared fixtures. Shard-writing helpers live in ``tests/shards.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shards import make_shard
from tiny import write_vocab

from bert_tutorial.config import DATA_SAMPLES
from bert_tutorial.tokenization import load_tokenizer


@pytest.fixture
def shard_factory(tmp_path: Path) -> Callable[..., Path]:
    """``shard_factory(name="shard.hdf5", **overrides)`` writes a shard into ``tmp_path``.

    Keyword arguments are those of :func:`shards.make_shard`; ``name`` may include a
    sub-folder, which is created.
    """

    def factory(name: str = "shard.hdf5", **overrides: Any) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return make_shard(path, **overrides)

    return factory


@pytest.fixture(scope="module")
def bert_tokenizer():
    """The bert-base-uncased WordPiece tokenizer of the sample data."""
    return load_tokenizer(DATA_SAMPLES / "vocab.txt")


@pytest.fixture
def toy_tokenizer(tmp_path):
    """A tokenizer over tests/tiny.py's toy vocabulary (the ids tests/shards.py writes)."""
    return load_tokenizer(write_vocab(tmp_path / "vocab.txt"))
