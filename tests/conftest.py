"""Shared fixtures. Shard-writing helpers live in ``tests/shards.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shards import make_shard


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
