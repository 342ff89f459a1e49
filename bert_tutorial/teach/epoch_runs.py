"""Runs that differ in one choice, read epoch by epoch: the held-out loss beside the training loss.

Notebook 07 trains on a small corpus for many epochs with static or dynamic masks, with
or without NSP. Overfitting shows as a training loss that keeps falling while the
held-out loss stops falling and rises: :func:`plot_epoch_runs` puts the two side by side,
on one y range, so the gap between them reads at a glance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

_STYLES = (("tab:blue", "o"), ("tab:orange", "s"), ("tab:green", "^"), ("tab:red", "D"),
           ("tab:purple", "v"), ("tab:brown", "P"))


def plot_epoch_runs(runs: Mapping[str, Mapping[str, Sequence[float]]],
                    title: str = "Many epochs over a small corpus") -> Figure:
    """Two panels sharing the y axis: the held-out MLM loss after each epoch (epoch 0 = the
    starting model) and the mean training MLM loss of each epoch.

    ``runs``: name -> ``{"held_out": [epochs + 1 values], "train": [epochs values]}``.
    Each held-out line is labelled with its best and last value: a run that overfits
    ends above its best.
    """
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    held_out_ax, train_ax = fig.subplots(1, 2, sharey=True)
    shown: list[float] = []
    for (name, run), (color, marker) in zip(runs.items(), _STYLES * 2, strict=False):
        held_out, train = list(run["held_out"]), list(run["train"])
        best = min(range(len(held_out)), key=held_out.__getitem__)
        held_out_ax.plot(range(len(held_out)), held_out, "-", marker=marker, markersize=4, color=color,
                         label=f"{name}: best {held_out[best]:.2f} (epoch {best}), last {held_out[-1]:.2f}")
        held_out_ax.plot([best], [held_out[best]], "*", markersize=13, color=color)
        train_ax.plot(range(1, len(train) + 1), train, "-", marker=marker, markersize=4, color=color,
                      label=f"{name}: last {train[-1]:.2f}")
        shown += [v for v in held_out + train if math.isfinite(v)]
    if shown:
        pad = 0.05 * (max(shown) - min(shown)) + 0.02
        held_out_ax.set_ylim(min(shown) - pad, max(shown) + pad)
    for ax, what in ((held_out_ax, "held-out MLM loss after each epoch (star: the best)"),
                     (train_ax, "training MLM loss, mean over each epoch")):
        ax.set_title(what)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    held_out_ax.set_ylabel("MLM loss (nats, lower is better)")
    fig.suptitle(title)
    return fig
