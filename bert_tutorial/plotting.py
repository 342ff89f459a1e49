"""Loss curves and the learning-rate schedule as matplotlib figures.

Figures are built with the object-oriented API (``Figure``, not ``pyplot``), so
plotting works headless in a training process and still renders inline when a
notebook returns the figure (with the inline backend active: ``%matplotlib inline``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .metrics import METRICS_FILE, read_metrics

LOSS_CURVES_PNG = "loss_curves.png"
LR_SCHEDULE_PNG = "lr_schedule.png"
_LOSSES = (("mlm_loss", "MLM"), ("nsp_loss", "NSP"), ("loss", "total"))


def plot_loss_curves(records: Sequence[dict[str, Any]], path: str | Path | None = None) -> Figure:
    """MLM, NSP and total loss: train per logged step (lines), eval per epoch (markers)."""
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, 3, sharex=True)
    for ax, (key, title) in zip(axes, _LOSSES, strict=True):
        ax.plot([r["step"] for r in train], [r[key] for r in train], label="train", color="tab:blue")
        if evals:
            ax.plot([r["step"] for r in evals], [r[key] for r in evals], "o--", label="eval",
                    color="tab:orange")
        ax.set_title(f"{title} loss")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cross-entropy")
    axes[0].legend()
    return save_figure(fig, path)


def plot_accuracy(records: Sequence[dict[str, Any]], path: str | Path | None = None) -> Figure:
    """Eval MLM and NSP accuracy per evaluation."""
    evals = [r for r in records if r["kind"] == "eval"]
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    steps = [r["step"] for r in evals]
    ax.plot(steps, [r["mlm_accuracy"] for r in evals], "o-", label="MLM accuracy")
    ax.plot(steps, [r["nsp_accuracy"] for r in evals], "s-", label="NSP accuracy")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_lr_schedule(
    lrs: Sequence[float],
    path: str | Path | None = None,
    warmup: int | None = None,
    steps: Sequence[int] | None = None,
) -> Figure:
    """The learning rate per optimizer step (from ``optim.lr_schedule`` or logged records)."""
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(range(len(lrs)) if steps is None else steps, lrs)
    if warmup:
        ax.axvline(warmup, color="grey", linestyle=":", label=f"end of warmup ({warmup} steps)")
        ax.legend()
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title("linear warmup, then linear decay")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def save_training_plots(output_dir: str | Path) -> list[Path]:
    """Write the loss-curve and LR PNGs of a run folder from its metrics file."""
    output_dir = Path(output_dir)
    records = read_metrics(output_dir / METRICS_FILE)
    train = [r for r in records if r["kind"] == "train"]
    written = [output_dir / LOSS_CURVES_PNG]
    plot_loss_curves(records, written[0])
    if train:
        written.append(output_dir / LR_SCHEDULE_PNG)
        plot_lr_schedule([r["lr"] for r in train], written[-1], steps=[r["step"] for r in train])
    return written


def save_figure(fig: Figure, path: str | Path | None) -> Figure:
    """Write ``fig`` as a PNG when a path is given; return it either way (for notebooks)."""
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
