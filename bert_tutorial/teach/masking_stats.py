"""Masking statistics over whole shards: did the data get the 15 % and the 80/10/10 it should?

Decoding a few samples (:mod:`bert_tutorial.teach.decode`) shows *what* masking does; it
cannot show that the proportions are right. :func:`masking_statistics` counts over
every sequence of a set of shards (share of tokens chosen, how they were corrupted,
NSP balance, lengths) and :func:`plot_masking_statistics` draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from transformers import PreTrainedTokenizerBase

from ..core.data import PathLike, find_shards
from ..pretrain.curves import save_figure
from .decode import load_shard


@dataclass
class MaskingStatistics:
    """Counts over every sequence of a set of shards (see :func:`masking_statistics`)."""

    sequences: int
    max_seq_length: int
    max_predictions: int
    #: Real tokens, [CLS] and [SEP] included (the base of the 15 %).
    tokens: int
    #: Real tokens that may be chosen, i.e. without [CLS] and [SEP].
    candidates: int
    predictions: int
    replaced_by_mask: int
    replaced_by_random: int
    unchanged: int
    nsp_is_next: int
    nsp_random_next: int
    #: Real tokens per sequence.
    lengths: np.ndarray
    #: Prediction slots used per sequence.
    predictions_per_sequence: np.ndarray

    @property
    def fraction_predicted(self) -> float:
        """Share of all real tokens chosen for prediction (the 15 % of the algorithm)."""
        return self.predictions / max(1, self.tokens)

    @property
    def fraction_of_candidates(self) -> float:
        """Share of the tokens that could be chosen ([CLS]/[SEP] never are)."""
        return self.predictions / max(1, self.candidates)

    @property
    def shares(self) -> dict[str, float]:
        """How the chosen tokens were corrupted: ideally 0.8 / 0.1 / 0.1."""
        total = max(1, self.predictions)
        return {
            "[MASK]": self.replaced_by_mask / total,
            "random": self.replaced_by_random / total,
            "unchanged": self.unchanged / total,
        }

    @property
    def nsp_random_fraction(self) -> float:
        """Share of sequences whose segment B is random text (NSP label 1)."""
        return self.nsp_random_next / max(1, self.sequences)

    def summary(self) -> dict[str, Any]:
        """The headline numbers, rounded for printing."""
        return {
            "sequences": self.sequences,
            "max_seq_length (T)": self.max_seq_length,
            "max_predictions (P)": self.max_predictions,
            "mean real tokens per sequence": round(float(self.lengths.mean()), 1),
            "sequences padded": round(float((self.lengths < self.max_seq_length).mean()), 3),
            "fraction of tokens predicted": round(self.fraction_predicted, 4),
            "fraction of candidates predicted": round(self.fraction_of_candidates, 4),
            **{f"predicted -> {k}": round(v, 4) for k, v in self.shares.items()},
            "sequences using all P slots": round(
                float((self.predictions_per_sequence == self.max_predictions).mean()), 3
            ),
            "NSP random-next fraction": round(self.nsp_random_fraction, 4),
        }


def masking_statistics(
    shards: PathLike | Sequence[PathLike], tokenizer: PreTrainedTokenizerBase
) -> MaskingStatistics:
    """Count what the masking did in every sequence of ``shards`` (a folder, file or list).

    A token "unchanged" by masking is one whose input id equals its label; a random
    replacement that happened to draw the original token is counted there too (rare).
    Shards are read one at a time.
    """
    special = np.array([tokenizer.cls_token_id, tokenizer.sep_token_id])
    counts = dict.fromkeys(("sequences", "tokens", "candidates", "predictions", "replaced_by_mask",
                            "replaced_by_random", "unchanged", "nsp_random_next"), 0)
    lengths, per_sequence = [], []
    seq_length = max_predictions = 0
    for path in find_shards(shards):
        a = load_shard(path, vocab_size=len(tokenizer))
        seq_length, max_predictions = a["input_ids"].shape[1], a["masked_lm_positions"].shape[1]
        real = a["input_mask"].astype(bool)
        used = a["masked_lm_positions"] != 0
        seen = np.take_along_axis(a["input_ids"], a["masked_lm_positions"].astype(np.int64), axis=1)
        is_mask = used & (seen == tokenizer.mask_token_id)
        is_same = used & ~is_mask & (seen == a["masked_lm_ids"])
        counts["sequences"] += len(real)
        counts["tokens"] += int(real.sum())
        counts["candidates"] += int((real & ~np.isin(a["input_ids"], special)).sum())
        counts["predictions"] += int(used.sum())
        counts["replaced_by_mask"] += int(is_mask.sum())
        counts["replaced_by_random"] += int((used & ~is_mask & ~is_same).sum())
        counts["unchanged"] += int(is_same.sum())
        counts["nsp_random_next"] += int(a["next_sentence_labels"].sum())
        lengths.append(real.sum(axis=1))
        per_sequence.append(used.sum(axis=1))
    return MaskingStatistics(
        **counts,
        max_seq_length=seq_length,
        max_predictions=max_predictions,
        nsp_is_next=counts["sequences"] - counts["nsp_random_next"],
        lengths=np.concatenate(lengths),
        predictions_per_sequence=np.concatenate(per_sequence),
    )


def _plot_fraction_predicted(ax: Axes, stats: MaskingStatistics) -> None:
    """Histogram of predictions / real tokens per sequence (log counts: the spread is rounding)."""
    per_seq = stats.predictions_per_sequence / np.maximum(stats.lengths, 1)
    low = min(0.10, float(per_seq.min(initial=0.15)))
    high = max(0.20, float(per_seq.max(initial=0.15)))
    ax.hist(per_seq, bins=np.arange(low, high + 0.0025, 0.0025), color="tab:blue")
    ax.axvline(0.15, color="black", linestyle="--", linewidth=1, label="15 %")
    ax.set_yscale("log")
    ax.set_title(f"chosen for prediction\n(mean {stats.fraction_predicted:.1%} of real tokens)")
    ax.set_xlabel("predictions / real tokens, per sequence")
    ax.set_ylabel("sequences (log scale)")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.legend(loc="upper right")


def _plot_corruption(ax: Axes, stats: MaskingStatistics) -> None:
    """Bars of [MASK] / random / unchanged shares, with the 80/10/10 targets as black ticks."""
    shares = stats.shares
    bars = ax.bar(list(shares), list(shares.values()), color=["tab:blue", "tab:orange", "tab:green"])
    # Inside the bars: above them the labels would collide with the target ticks.
    ax.bar_label(bars, labels=[f"{v:.1%}" for v in shares.values()], label_type="center",
                 color="white", fontweight="bold")
    ax.scatter(list(shares), [0.8, 0.1, 0.1], marker="_", s=900, linewidths=2, color="black",
               zorder=3, label="target 80/10/10")
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_title(f"input at a predicted position\n({stats.predictions:,} predictions)")
    ax.set_ylabel("share of predictions")
    ax.legend(loc="upper right")


def _plot_nsp_balance(ax: Axes, stats: MaskingStatistics) -> None:
    """Bars of IsNext / NotNext sequence counts against the 50 % line."""
    nsp = {"IsNext (0)": stats.nsp_is_next, "NotNext (1)": stats.nsp_random_next}
    bars = ax.bar(list(nsp), list(nsp.values()), color=["tab:purple", "tab:gray"])
    ax.bar_label(bars, labels=[f"{v:,}\n{v / max(1, stats.sequences):.1%}" for v in nsp.values()],
                 label_type="center", color="white", fontweight="bold")
    ax.axhline(stats.sequences / 2, color="black", linestyle="--", linewidth=1, label="half")
    ax.set_ylim(0, max(nsp.values()) * 1.25)
    ax.set_title("next-sentence labels")
    ax.set_ylabel("sequences")
    ax.legend(loc="upper left")


def _plot_lengths(ax: Axes, stats: MaskingStatistics) -> None:
    """Histogram of real tokens per sequence; full-length sequences end at the T line."""
    t = stats.max_seq_length
    full = float((stats.lengths >= t).mean()) if stats.sequences else 0.0
    ax.hist(stats.lengths, bins=32, range=(0, t), color="tab:blue")
    ax.axvline(t, color="black", linestyle="--", linewidth=1, label=f"T = {t} ({full:.0%} fill it)")
    ax.set_xlim(0, t * 1.04)
    ax.set_yscale("log")
    ax.set_title("real tokens per sequence\n(the rest is padding)")
    ax.set_xlabel("tokens")
    ax.set_ylabel("sequences (log scale)")
    ax.legend(loc="upper left")


def plot_masking_statistics(stats: MaskingStatistics, path: PathLike | None = None) -> Figure:
    """Four panels: share of tokens predicted per sequence, 80/10/10, NSP balance, lengths."""
    fig = Figure(figsize=(16, 3.8), layout="constrained")
    axes = fig.subplots(1, 4)
    panels = (_plot_fraction_predicted, _plot_corruption, _plot_nsp_balance, _plot_lengths)
    for ax, panel in zip(axes, panels, strict=True):
        panel(ax, stats)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)
