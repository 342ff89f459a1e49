"""Training curves that can be read without a guide: reference lines, honest scales, one cadence.

A loss curve alone does not say whether a model learnt anything. Each panel therefore
carries the figure a model with no knowledge would reach (``References``): ln V for
MLM loss (a uniform guess over the vocabulary), the unigram-frequency baseline (every
masked token predicted from its frequency, no context), ln 2 for NSP loss and 50 % for
NSP accuracy (a coin), the most-frequent-token accuracy for MLM accuracy. Axes follow
the values (every point, step 0 included) with a minimum span, and the raw NSP train
curve is drawn faint under a smoothed one, so noise does not look like progress.

Figures are ``matplotlib.figure.Figure`` objects (no pyplot state): they work headless
in a training process, and a notebook shows one by leaving it as a cell's value.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ..safe_io import write_bytes_atomic
from .metrics import METRICS_FILE, read_metrics

Records = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class References:
    """What a model without knowledge scores, for the reference lines (see module docstring)."""

    vocab_size: int
    unigram_mlm_loss: float | None = None
    most_frequent_accuracy: float | None = None

    def to_record(self) -> dict[str, Any]:
        """The ``metrics.jsonl`` record the Trainer writes once, before step 1."""
        return {"kind": "reference", "step": 0, **asdict(self)}

    @classmethod
    def measure(cls, train_paths: Sequence[Path], eval_paths: Sequence[Path], vocab_size: int) -> References:
        """The unigram baseline on ``eval_paths``, its frequencies counted on at most the first
        4 train shards: enough for stable frequencies, and bounded work on a large corpus."""
        from ..core.evaluation import frequency_baseline

        base = frequency_baseline(list(train_paths)[:4], list(eval_paths), vocab_size)
        return cls(vocab_size, base["mlm_loss"], base["mlm_accuracy"])

    @classmethod
    def from_records(cls, records: Records) -> References | None:
        found = [r for r in records if r.get("kind") == "reference"]
        if not found:
            return None
        return cls(**{k: v for k, v in found[-1].items() if k not in ("kind", "step")})


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (shorter at the start), so a curve never looks ahead."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v
    sums = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(idx - window, 0)
    return (sums[idx] - sums[lo]) / (idx - lo)


def _series(records: Records, kind: str, key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in records if r.get("kind") == kind and r.get(key) is not None]
    return [r["step"] for r in rows], [float(r[key]) for r in rows]


def _reference(ax: Axes, value: float | None, label: str, color: str) -> None:
    if value is not None and math.isfinite(value):
        ax.axhline(value, color=color, linestyle="--", linewidth=1.1, label=label)


def _train_and_eval(ax: Axes, records: Records, key: str, smoothing: int) -> None:
    steps, values = _series(records, "train", key)
    if steps:
        if smoothing > 1:
            ax.plot(steps, values, color="tab:blue", alpha=0.25, linewidth=1)
            ax.plot(steps, smooth(values, smoothing), color="tab:blue", label=f"train (mean of {smoothing})")
        else:
            ax.plot(steps, values, color="tab:blue", label="train")
    steps, values = _series(records, "eval", key)
    if steps:
        ax.plot(steps, values, "o-", color="tab:orange", markersize=4, label="eval (held out)")


def _finish(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no 2.5 ticks
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _fit_axis(ax: Axes, values: Sequence[float], floor: float = 0.0) -> None:
    """A y range around ``values`` (every point shown, step 0 included) with a small margin;
    at least ``floor`` wide, so that noise of a few hundredths does not fill the panel."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return
    lo, hi = min(finite), max(finite)
    if hi - lo < floor:
        mid = (hi + lo) / 2
        lo, hi = mid - floor / 2, mid + floor / 2
    pad = 0.08 * (hi - lo) + 1e-3
    ax.set_ylim(lo - pad, hi + pad)


def _mlm_loss_panel(ax: Axes, records: Records, refs: References | None) -> None:
    _train_and_eval(ax, records, "mlm_loss", smoothing=1)
    shown = [v for kind in ("train", "eval") for v in _series(records, kind, "mlm_loss")[1]]
    if refs:
        _reference(ax, refs.unigram_mlm_loss, f"token frequencies only = {refs.unigram_mlm_loss or 0:.2f}",
                   "tab:red")
        shown += [refs.unigram_mlm_loss] if refs.unigram_mlm_loss is not None else []
        ln_v = math.log(refs.vocab_size)
        if shown and ln_v > max(shown) + 0.5 * (max(shown) - min(shown) + 0.2):
            # A continued run sits far below ln V: an axis reaching up to it would flatten the
            # gain into a line, so the axis follows the data and ln V is named in the legend.
            ax.plot([], [], " ", label=f"uniform guess ln V = {ln_v:.2f} (off the top)")
        else:
            _reference(ax, ln_v, f"uniform guess ln V = {ln_v:.2f}", "grey")
            shown.append(ln_v)
    _fit_axis(ax, shown)
    # Perplexity is exp(loss): the same curve read on a second scale, not a panel of its own.
    right = ax.secondary_yaxis("right", functions=(np.exp, lambda p: np.log(np.maximum(p, 1e-300))))
    right.set_ylabel("perplexity = exp(loss)")
    _finish(ax, "MLM loss (perplexity on the right)", "cross-entropy (nats)")


def _nsp_loss_panel(ax: Axes, records: Records) -> None:
    _train_and_eval(ax, records, "nsp_loss", smoothing=5)
    _reference(ax, math.log(2), "coin flip ln 2 = 0.69", "grey")
    shown = [v for kind in ("train", "eval") for v in _series(records, kind, "nsp_loss")[1]]
    _fit_axis(ax, shown + [math.log(2)], floor=0.3)  # NSP noise of +-0.02 must not fill the panel
    _finish(ax, "NSP loss", "cross-entropy (nats)")


def _accuracy_panel(ax: Axes, records: Records, key: str, refs: References | None) -> None:
    steps, values = _series(records, "eval", key)
    ax.plot(steps, values, "o-", color="tab:orange", markersize=4, label="eval (held out)")
    shown = list(values)
    if key == "nsp_accuracy":
        _reference(ax, 0.5, "coin flip 50 %", "grey")
        shown.append(0.5)
        title = "NSP accuracy"
    else:
        if refs and refs.most_frequent_accuracy is not None:
            _reference(ax, refs.most_frequent_accuracy,
                       f"always the most frequent token = {refs.most_frequent_accuracy:.1%}", "tab:red")
            shown.append(refs.most_frequent_accuracy)
        title = "MLM accuracy (masked tokens)"
    _fit_axis(ax, shown, floor=0.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    _finish(ax, title + "; axis not from 0", "share correct")


def _lr_panel(ax: Axes, records: Records) -> None:
    steps, lrs = _series(records, "train", "lr")
    if not steps:  # eval-only records (checkpoints evaluated after training)
        ax.axis("off")
        ax.text(0.5, 0.5, "no training records:\nno learning rate to show", ha="center", va="center")
        return
    ax.plot(steps, lrs, color="tab:purple", label="learning rate")
    ax.set_ylim(bottom=0)
    _finish(ax, "learning rate", "learning rate")


def plot_training_curves(records: Records, path: str | Path | None = None,
                         references: References | None = None) -> Figure:
    """The run's story in five panels: MLM loss and accuracy, the learning rate, NSP loss and
    accuracy (three for a masked-LM-only run), and the first and last evaluation as text.

    ``records`` are ``metrics.jsonl`` records (``train``, ``eval`` and the ``reference``
    record the Trainer writes, used when ``references`` is not given). Eval records alone
    (e.g. checkpoints evaluated after training) plot fine. Every y axis is fitted to the
    values and their reference lines, so that a change of a few points is visible.
    """
    refs = references or References.from_records(records)
    if not any("nsp_loss" in r for r in records):  # --objective mlm: four panels, no NSP
        fig = Figure(figsize=(11, 7.5), layout="constrained")
        axes = fig.subplots(2, 2)
        _mlm_loss_panel(axes[0, 0], records, refs)
        _accuracy_panel(axes[0, 1], records, "mlm_accuracy", refs)
        _lr_panel(axes[1, 0], records)
        summary = axes[1, 1]
    else:
        fig = Figure(figsize=(15, 7.5), layout="constrained")
        axes = fig.subplots(2, 3)
        _mlm_loss_panel(axes[0, 0], records, refs)
        _accuracy_panel(axes[0, 1], records, "mlm_accuracy", refs)
        _lr_panel(axes[0, 2], records)
        _nsp_loss_panel(axes[1, 0], records)
        _accuracy_panel(axes[1, 1], records, "nsp_accuracy", refs)
        summary = axes[1, 2]
    summary.axis("off")
    summary.text(0, 0.95, _summary(records, refs), va="top", family="monospace", fontsize=9)
    return save_figure(fig, path)


def _summary(records: Records, refs: References | None) -> str:
    """First and last evaluation against the baselines, as text beside the plots."""
    evals = [r for r in records if r.get("kind") == "eval"]
    if not evals:
        return "no evaluation yet"
    with_nsp = any("nsp_accuracy" in r for r in evals)  # not for --objective mlm
    lines = [f"{'':14}{'MLM loss':>9}{'MLM acc':>9}" + (f"{'NSP acc':>9}" if with_nsp else "")]
    for name, r in (("first eval", evals[0]), ("last eval", evals[-1])):
        nsp = (f"{r['nsp_accuracy']:9.1%}" if "nsp_accuracy" in r else f"{'-':>9}") if with_nsp else ""
        lines.append(f"{name} @{r['step']:<4}{r['mlm_loss']:9.3f}{r['mlm_accuracy']:9.1%}{nsp}")
    if refs and refs.unigram_mlm_loss is not None:
        lines.append(f"{'frequencies':14}{refs.unigram_mlm_loss:9.3f}{refs.most_frequent_accuracy or 0:9.1%}"
                     + (f"{'-':>9}" if with_nsp else ""))
        lines.append("(frequencies: each masked token guessed\n from its corpus frequency alone)")
    return "\n".join(lines)


#: How a metric's key reads on an axis.
_LABELS = {"mlm_loss": "MLM loss (nats)", "nsp_loss": "NSP loss (nats)", "loss": "MLM + NSP loss (nats)",
           "mlm_accuracy": "MLM accuracy", "nsp_accuracy": "NSP accuracy", "lr": "learning rate"}


def plot_runs(runs: Mapping[str, Records], key: str = "mlm_loss", path: str | Path | None = None,
              references: References | None = None) -> Figure:
    """One metric of several runs on shared axes (e.g. a DDP run over a one-process run)."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    styles = [("-", "tab:blue"), ("--", "tab:orange"), (":", "tab:green"), ("-.", "tab:red")]
    for k, ((name, records), (line, color)) in enumerate(zip(runs.items(), styles * 4, strict=False)):
        # Later runs thinner and smaller, so runs that coincide still show both.
        steps, values = _series(records, "train", key)
        ax.plot(steps, values, line, color=color, label=f"{name} (train)", linewidth=3.0 / (1 + k))
        steps, values = _series(records, "eval", key)
        ax.plot(steps, values, "o", color=color, label=f"{name} (eval)", markersize=9 - 3 * min(k, 2),
                fillstyle="none" if k else "full", alpha=0.9)
    if references and key == "mlm_loss":
        _reference(ax, math.log(references.vocab_size), "uniform guess ln V", "grey")
    label = _LABELS.get(key, key.replace("_", " "))
    _finish(ax, label, label)
    return save_figure(fig, path)


def plot_lr_schedule(lrs: Sequence[float], path: str | Path | None = None,
                     warmup: int | None = None) -> Figure:
    """The learning rate per optimizer step, from step 0 (as ``optim.lr_schedule`` gives it)."""
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(range(len(lrs)), lrs)
    if warmup:  # the LR reaches its peak at step warmup - 1 (steps count from 0)
        ax.axvline(warmup - 1, color="grey", linestyle=":", label=f"end of warmup ({warmup} steps)")
        ax.legend()
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title("linear warmup, then linear decay")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def save_training_plots(output_dir: str | Path) -> None:
    """Redraw ``loss_curves.png`` of a run folder from its metrics file."""
    output_dir = Path(output_dir)
    plot_training_curves(read_metrics(output_dir / METRICS_FILE), output_dir / "loss_curves.png")


def save_figure(fig: Figure, path: str | Path | None) -> Figure:
    """Write ``fig`` as a PNG when a path is given; return it either way (for notebooks).

    Drawn in memory and written atomically (:func:`~bert_tutorial.safe_io.write_bytes_atomic`):
    the image writer wrote straight into the file, so a full disk left a truncated PNG and
    an ``OSError`` traceback; now the previous figure stays whole and the error is named.
    """
    if path is not None:
        path = Path(path)
        image = io.BytesIO()
        fig.savefig(image, format=path.suffix.lstrip(".").lower() or "png", dpi=110)
        write_bytes_atomic(path, image.getvalue())
    return fig
