"""Continued pre-training on a new domain: what is gained there, what is forgotten elsewhere.

:func:`plot_domain_curves` draws the held-out MLM loss of several domains against the
optimizer step, each with its own token-frequency baseline as a dashed line of the same
colour, so the new domain's fall and the old domain's rise read at a glance.
:func:`mix_shards` makes the continuation data of the forgetting exercise: the
sequences of several shard folders shuffled together into new shards. Copying the
folders side by side would not mix them: the Trainer reads one shard at a time
(``ShardedSampler``), and a short run ends inside the first shard it draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..core.data import PathLike, find_shards
from ..hdf5_format import FIELDS, inspect_shard, read_shard, write_shard
from ..safe_io import write_text_atomic

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")
_DONE = "COMPLETE"


def plot_domain_curves(curves: Mapping[str, Mapping[int, float]], baselines: Mapping[str, float],
                       title: str = "Held-out MLM loss of each domain during continued pre-training") -> Figure:
    """One panel: for each domain (name -> {step: held-out MLM loss}) a line with markers,
    labelled with its first and last value, and its baseline (name -> loss) dashed in the
    same colour. Perplexity = exp(loss) is the right-hand axis."""
    fig = Figure(figsize=(9, 5.2), layout="constrained")
    ax = fig.subplots()
    shown = []
    for (name, points), color in zip(curves.items(), _COLORS, strict=False):
        steps = sorted(points)
        losses = [points[s] for s in steps]
        change = losses[-1] - losses[0]
        ax.plot(steps, losses, "o-", color=color, linewidth=2, markersize=5,
                label=f"{name}: {losses[0]:.2f} \u2192 {losses[-1]:.2f} ({change:+.2f})")
        shown += losses
        if name in baselines and math.isfinite(baselines[name]):
            ax.axhline(baselines[name], color=color, linestyle="--", linewidth=1.2,
                       label=f"{name}: token frequencies only = {baselines[name]:.2f}")
            shown.append(baselines[name])
    if shown:
        pad = 0.08 * (max(shown) - min(shown)) + 0.05
        ax.set_ylim(min(shown) - pad, max(shown) + pad)
    ax.set_xlabel("optimizer step (0 = the starting model)")
    ax.set_ylabel("held-out MLM loss (nats, lower is better)")
    right = ax.secondary_yaxis("right", functions=(np.exp, lambda p: np.log(np.maximum(p, 1e-300))))
    right.set_ylabel("perplexity = exp(loss)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return fig


def mix_shards(sources: Sequence[PathLike], output_dir: PathLike, *, seed: int = 12345,
               shard_size: int = 2500, prefix: str = "mixed", sequences: int | None = None) -> str:
    """Every sequence of the ``sources`` folders (or shard files), shuffled together with
    ``seed`` and written as shards of at most ``shard_size`` sequences to ``output_dir``;
    ``sequences``: only that many of them (a random sample, e.g. a small corpus to train on
    for many epochs).

    All sources must have the same T and P. A folder finished earlier with the same
    arguments (its ``COMPLETE`` marker says so) is reused. Returns ``output_dir`` as a
    string (a ``train_data``).
    """
    output_dir = Path(output_dir)
    # The shards' headers say all the checks and the marker need: the contents are read
    # only when the folder is (re)made.
    infos = [inspect_shard(path) for source in sources for path in find_shards(source)]
    shapes = {(info.max_seq_length, info.max_predictions) for info in infos}
    if len(shapes) != 1:
        raise ValueError(f"the sources have different (T, P): {sorted(shapes)}")
    total = sum(info.num_samples for info in infos)
    if sequences is not None and not 1 <= sequences <= total:
        raise ValueError(f"sequences={sequences}: the sources hold {total} (1 to {total} can be taken)")
    order = np.random.default_rng(seed).permutation(total)[:sequences]
    done = (f"{len(order)} sequences from {', '.join(map(str, sources))} (seed {seed}, "
            f"shards of {shard_size})\n")
    marker = output_dir / _DONE
    if marker.is_file() and marker.read_text() == done:
        return str(output_dir)
    parts = [read_shard(info) for info in infos]
    arrays = {name: np.concatenate([p[name] for p in parts]) for name in FIELDS}
    output_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for old in output_dir.glob(f"{prefix}_shard_*.hdf5"):
        old.unlink()  # an unfinished earlier attempt, or one with other arguments
    for number, start in enumerate(range(0, len(order), shard_size)):
        rows = order[start:start + shard_size]
        write_shard(output_dir / f"{prefix}_shard_{number:05d}.hdf5", {k: v[rows] for k, v in arrays.items()})
    write_text_atomic(marker, done)
    return str(output_dir)
    parts = [read_shard(inspect_shard(path)) for source in sources for path in find_shards(source)]
    shapes = {(p["input_ids"].shape[1], p["masked_lm_positions"].shape[1]) for p in parts}
    if len(shapes) != 1:
        raise ValueError(f"the sources have different (T, P): {sorted(shapes)}")
    parts = [read_shard(info) for info in infos]
    arrays = {name: np.concatenate([p[name] for p in parts]) for name in FIELDS}
    order = np.random.default_rng(seed).permutation(len(arrays["input_ids"]))
    output_dir.mkdir(parents=True, exist_ok=True)
    for old in output_dir.glob(f"{prefix}_shard_*.hdf5"):
        old.unlink()  # an unfinished earlier attempt
    for number, start in enumerate(range(0, len(order), shard_size)):
        rows = order[start:start + shard_size]
        write_shard(output_dir / f"{prefix}_shard_{number:05d}.hdf5", {k: v[rows] for k, v in arrays.items()})
    (output_dir / _DONE).write_text(f"{len(order)} sequences from {', '.join(map(str, sources))}\n")
    return str(output_dir)
