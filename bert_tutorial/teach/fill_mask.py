"""What the model learnt: fill-mask predictions and eval metrics before vs after training.

A falling loss curve says little to a reader; the model completing "it is a truth
universally [MASK]" does. The pre-training MLM head is run directly (no fine-tuning, no
pipeline object), and several models' answers are lined up in a grid.

Plots are ``matplotlib.figure.Figure`` objects (no pyplot state), like
:mod:`bert_tutorial.pretrain.curves`: a notebook shows one by leaving it as a cell's value.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.data import PathLike
from ..core.model import eval_mode, unwrap
from ..pretrain.curves import save_figure


@dataclass(frozen=True)
class FillMaskResult:
    """Top-k predictions for each ``[MASK]`` of one sentence, best first."""

    sentence: str
    predictions: list[list[tuple[str, float]]]

    def filled(self) -> str:
        """The sentence with every [MASK] replaced by its top prediction."""
        text = self.sentence
        for options in self.predictions:
            text = text.replace("[MASK]", f"<{options[0][0]}>", 1)
        return text


@torch.no_grad()
def fill_mask(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    top_k: int = 5,
    device: torch.device | str | None = None,
) -> list[FillMaskResult]:
    """The MLM head's top-k tokens (with probabilities) for every ``[MASK]`` in each sentence.

    ``model`` is a ``BertForPreTraining`` or anything :func:`~bert_tutorial.core.model.unwrap`
    peels. Sentences are padded into one batch with their real attention mask, and only
    the masked positions are decoded. The model's train/eval mode is restored afterwards.
    """
    if not sentences:
        return []
    missing = [s for s in sentences if tokenizer.mask_token not in s]
    if missing:
        raise ValueError(f"sentence(s) without {tokenizer.mask_token}: {missing}")
    bert = unwrap(model)
    device = torch.device(device) if device is not None else next(bert.parameters()).device
    enc = tokenizer(list(sentences), padding=True, truncation=True, return_tensors="pt",
                    max_length=bert.config.max_position_embeddings)
    enc = {k: v.to(device) for k, v in enc.items()}
    with eval_mode(bert):
        hidden = bert.bert(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"],
                           attention_mask=enc["attention_mask"], return_dict=True).last_hidden_state
        where = (enc["input_ids"] == tokenizer.mask_token_id).nonzero()
        probs = bert.cls.predictions(hidden[where[:, 0], where[:, 1]]).float().softmax(-1)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    per_sentence: list[list[list[tuple[str, float]]]] = [[] for _ in sentences]
    for row, ids, values in zip(where[:, 0].tolist(), top.indices.tolist(), top.values.tolist(),
                                strict=True):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        per_sentence[row].append(list(zip(tokens, values, strict=True)))
    return [FillMaskResult(s, p) for s, p in zip(sentences, per_sentence, strict=True)]


def _around_mask(sentence: str, width: int) -> str:
    """At most ``width`` characters of ``sentence`` centred on its first [MASK], "…" where cut."""
    if len(sentence) <= width:
        return sentence
    centre = sentence.find("[MASK]") + 3
    start = min(max(centre - width // 2, 0), len(sentence) - width)
    return ("…" if start > 0 else "") + sentence[start:start + width] + ("…" if start + width < len(sentence) else "")


def plot_fill_mask(results: Mapping[str, Sequence[FillMaskResult]], answers: Sequence[str] | None = None,
                   top_k: int = 3, path: PathLike | None = None) -> Figure:
    """A grid of fill-mask guesses: one row per sentence, one column per model.

    Each cell lists a model's top-k tokens for the sentence's first ``[MASK]`` with their
    probabilities; a guess equal to the sentence's answer (``answers``) is drawn in green.
    A sentence over 150 characters is shown by the 150 around its first ``[MASK]``.
    """
    names = list(results)
    sentences = [r.sentence for r in results[names[0]]] if names else []
    text_width = 2.2  # the sentence column, in units of a model column
    fig = Figure(figsize=(2.4 * (text_width + len(names)), 0.4 + 0.75 * (len(sentences) + 0.5)),
                 layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_xlim(0, text_width + len(names))
    ax.set_ylim(len(sentences) - 0.4, -0.9)
    for col, name in enumerate(names):
        ax.text(text_width + col + 0.05, -0.7, name, fontweight="bold", fontsize=10, va="center")
    for row, sentence in enumerate(sentences):
        shown = _around_mask(sentence, 150)
        label = textwrap.fill(shown, 52) + (f"\nanswer: {answers[row]}" if answers else "")
        ax.text(0, row, label, fontsize=8, va="center")
        for col, name in enumerate(names):
            for k, (token, prob) in enumerate(results[name][row].predictions[0][:top_k]):
                hit = answers is not None and token.lower() == answers[row].lower()
                ax.text(text_width + col + 0.05, row + 0.24 * (k - (top_k - 1) / 2), f"{token}  {prob:.0%}",
                        fontsize=9, va="center", color="tab:green" if hit else "black",
                        fontweight="bold" if hit else "normal")
        ax.axhline(row + 0.5, color="lightgrey", linewidth=0.8)
    return save_figure(fig, path)


def plot_before_after(
    metrics: Mapping[str, Mapping[str, Mapping[str, float]]],
    nsp_constant: Mapping[str, float] | None = None,
    path: PathLike | None = None,
) -> Figure:
    """MLM loss, MLM accuracy and NSP accuracy of several models on several eval sets.

    ``metrics`` maps an eval set's name to {a model's name: an
    :func:`~bert_tutorial.core.evaluation.evaluate` result}, the models in the same order
    for every set; a model without ``nsp_accuracy`` (a frequency baseline) is left out of
    the NSP panel, where ``nsp_constant`` (eval set -> the share of the more common label)
    is drawn as a dashed line instead. One panel per metric, the models along x, one dot per
    eval set beside each model: the models are separate categories, so no line joins them.
    The y axes are fitted to the values, not started at 0, so that a change of a few tenths
    of a nat or a few points of accuracy is visible.
    """
    domains = list(metrics)
    names = list(metrics[domains[0]]) if domains else []
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    offset = 0.12  # each eval set's dots side by side around the model's tick
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    panels = (("mlm_loss", "MLM loss (lower is better)"),
              ("mlm_accuracy", "MLM accuracy (masked tokens)"),
              ("nsp_accuracy", "NSP accuracy (sequences)"))
    for ax, (key, title) in zip(fig.subplots(1, 3), panels, strict=True):
        is_share = key.endswith("accuracy")
        for d, domain in enumerate(domains):
            color = colors[d % len(colors)]
            shift = (d - (len(domains) - 1) / 2) * 2 * offset
            points = [(x + shift, float(metrics[domain][n][key])) for x, n in enumerate(names)
                      if key in metrics[domain][n]]
            ax.plot([x for x, _ in points], [v for _, v in points], "o", color=color, label=domain)
            for x, v in points:
                ax.annotate(f"{v:.1%}" if is_share else f"{v:.2f}", (x, v), textcoords="offset points",
                            xytext=(0, 6) if d % 2 == 0 else (0, -13), ha="center", fontsize=8, color=color)
            if key == "nsp_accuracy" and nsp_constant and domain in nsp_constant:
                ax.axhline(nsp_constant[domain], color=color, linestyle="--", linewidth=1,
                           label=f"constant answer = {nsp_constant[domain]:.1%}")
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.margins(y=0.15)
        if is_share:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
        ax.set_title(title + "; axis not from 0", fontsize=10)
        ax.grid(alpha=0.3)
        if key == "nsp_accuracy" and nsp_constant:
            ax.legend(loc="lower right", fontsize=7)
    if domains:
        fig.axes[0].legend(loc="upper right", fontsize=8)
    return save_figure(fig, path)
