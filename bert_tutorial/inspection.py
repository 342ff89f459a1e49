"""Looking inside the data and the model: the helpers behind the notebooks' pictures.

Everything a notebook shows that takes more than a line or two lives here, so it is
tested and the notebook cells stay thin:

* **Shards and samples.** :func:`load_shard`, :func:`decode_sample` (a sequence back
  to text, each prediction slot shown as ``[seen→original]``), :func:`masked_tokens`
  and :func:`masked_tokens_table` (what happened at every masked position).
* **Masking statistics.** :func:`masking_statistics` over whole shards (15 % chosen,
  80/10/10 split, NSP balance, lengths) and :func:`plot_masking_statistics`;
  :func:`frequency_baseline`, the loss and accuracy of knowing only token frequencies.
* **The original tutorial's pitfalls, made concrete.** :func:`original_tutorial_labels`
  (labels filled with -1 and a label on [CLS] from padded slots),
  :func:`attention_mask_demo` (an all-ones attention mask makes the output depend on
  the padding) and :func:`compare_mlm_heads` (vocabulary logits on every position
  versus only on the masked ones: same loss, a fraction of the work).
* **Data for a full run.** :func:`make_sample_shards` makes train/eval shards of the
  sample book at another sequence length (T=512 for ``FULL_RUN``), once.
* **What the model learnt.** :func:`fill_mask` (top-k predictions for ``[MASK]`` in
  any sentence), :func:`fill_mask_table` and :func:`plot_before_after`.

Plots are ``matplotlib.figure.Figure`` objects (no pyplot state), like
:mod:`bert_tutorial.plotting`: a notebook shows one by leaving it as a cell's value.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from torch import nn
from transformers import BertForPreTraining, PreTrainedTokenizerBase

from .config import DATA_SAMPLES
from .data import IGNORE_INDEX, PathLike, find_shards
from .hdf5_format import default_max_predictions, inspect_shard, read_shard
from .model import PretrainingModel, unwrap
from .plotting import save_figure

#: Arrow between what the model sees at a prediction slot and the original token.
ARROW = "→"

# --------------------------------------------------------------------------------------------
# Shards and single samples
# --------------------------------------------------------------------------------------------


def load_shard(path: PathLike, vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """All fields of one shard as numpy arrays (checked like the training reader checks them)."""
    return read_shard(inspect_shard(path), vocab_size)


def sample_at(arrays: Mapping[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    """Row ``index`` of every field of a loaded shard."""
    return {name: np.asarray(values[index]) for name, values in arrays.items()}


def _as_numpy(sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {
        k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
        for k, v in sample.items()
    }


def _real_length(sample: Mapping[str, np.ndarray]) -> int:
    """Number of real (non-padding) tokens: from the mask, else up to the last non-zero id."""
    for key in ("input_mask", "attention_mask"):
        if key in sample:
            return int(np.asarray(sample[key]).sum())
    nonzero = np.flatnonzero(np.asarray(sample["input_ids"]))
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def _prediction_slots(sample: Mapping[str, np.ndarray]) -> list[tuple[int, int]]:
    """(position, original id) of every used prediction slot.

    Works for a raw shard row (unused slots have position 0) and for a
    :class:`~bert_tutorial.data.PretrainingDataset` item (unused slots also hold -100).
    """
    positions = np.asarray(sample["masked_lm_positions"]).reshape(-1)
    ids = np.asarray(sample["masked_lm_ids"]).reshape(-1)
    return [
        (int(p), int(i)) for p, i in zip(positions, ids, strict=True) if p != 0 and i != IGNORE_INDEX
    ]


@dataclass(frozen=True)
class MaskedToken:
    """One prediction slot: where it is, what the model sees there and what it must predict."""

    position: int
    seen: str
    original: str
    #: "[MASK]" (80 %), "random" (10 %: another word piece) or "unchanged" (10 %).
    kind: str


def masked_tokens(tokenizer: PreTrainedTokenizerBase, sample: Mapping[str, Any]) -> list[MaskedToken]:
    """The prediction slots of one sample, in position order."""
    row = _as_numpy(sample)
    input_ids = row["input_ids"].reshape(-1)
    result = []
    for position, original_id in _prediction_slots(row):
        seen_id = int(input_ids[position])
        if seen_id == tokenizer.mask_token_id:
            kind = "[MASK]"
        elif seen_id == original_id:
            kind = "unchanged"
        else:
            kind = "random"
        seen, original = tokenizer.convert_ids_to_tokens([seen_id, original_id])
        result.append(MaskedToken(position, seen, original, kind))
    return result


def masked_tokens_table(tokenizer: PreTrainedTokenizerBase, sample: Mapping[str, Any]) -> str:
    """:func:`masked_tokens` as an aligned text table."""
    rows = [("position", "model sees", "original (label)", "kind")]
    rows += [(str(m.position), m.seen, m.original, m.kind) for m in masked_tokens(tokenizer, sample)]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def decode_sample(
    tokenizer: PreTrainedTokenizerBase,
    sample: Mapping[str, Any],
    *,
    merge_wordpieces: bool = True,
    show_padding: bool = True,
) -> str:
    """One training sequence as readable text, every prediction slot shown as ``[seen→original]``.

    ``seen`` is what the model gets as input (``MASK``, a random word piece, or the
    original itself) and ``original`` the label it must predict, e.g.
    ``[CLS] it is a truth universally [MASK→acknowledged] , ...``. Unmasked ``##``
    pieces are glued to the word before them; padding is summarised at the end.
    ``sample`` is a shard row (:func:`sample_at`) or a dataset item.
    """
    row = _as_numpy(sample)
    input_ids = row["input_ids"].reshape(-1)
    length = _real_length(row)
    slots = dict(_prediction_slots(row))
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in input_ids[:length]])
    pieces: list[str] = []
    glue_ok = False  # may the next "##" piece be glued to the previous output piece?
    for position, token in enumerate(tokens):
        if position in slots:
            seen = "MASK" if token == tokenizer.mask_token else token
            original = tokenizer.convert_ids_to_tokens(slots[position])
            pieces.append(f"[{seen}{ARROW}{original}]")
            glue_ok = False
        elif merge_wordpieces and token.startswith("##") and glue_ok and pieces:
            pieces[-1] += token[2:]
        else:
            pieces.append(token)
            glue_ok = not (token.startswith("[") and token.endswith("]"))
    text = " ".join(pieces)
    padding = input_ids.size - length
    if show_padding and padding:
        text += f"  (+ {padding} x [PAD])"
    return text


# --------------------------------------------------------------------------------------------
# Masking statistics over whole shards
# --------------------------------------------------------------------------------------------


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
    mask_id = tokenizer.mask_token_id
    counts = dict.fromkeys(
        ("sequences", "tokens", "candidates", "predictions", "mask", "random", "unchanged", "nsp1"), 0
    )
    lengths, per_sequence = [], []
    seq_length = max_predictions = 0
    for path in find_shards(shards):
        a = load_shard(path, vocab_size=len(tokenizer))
        seq_length, max_predictions = a["input_ids"].shape[1], a["masked_lm_positions"].shape[1]
        real = a["input_mask"].astype(bool)
        used = a["masked_lm_positions"] != 0
        seen = np.take_along_axis(a["input_ids"], a["masked_lm_positions"].astype(np.int64), axis=1)
        is_mask = used & (seen == mask_id)
        is_same = used & ~is_mask & (seen == a["masked_lm_ids"])
        counts["sequences"] += len(real)
        counts["tokens"] += int(real.sum())
        counts["candidates"] += int((real & ~np.isin(a["input_ids"], special)).sum())
        counts["predictions"] += int(used.sum())
        counts["mask"] += int(is_mask.sum())
        counts["unchanged"] += int(is_same.sum())
        counts["random"] += int((used & ~is_mask & ~is_same).sum())
        counts["nsp1"] += int(a["next_sentence_labels"].sum())
        lengths.append(real.sum(axis=1))
        per_sequence.append(used.sum(axis=1))
    return MaskingStatistics(
        sequences=counts["sequences"],
        max_seq_length=seq_length,
        max_predictions=max_predictions,
        tokens=counts["tokens"],
        candidates=counts["candidates"],
        predictions=counts["predictions"],
        replaced_by_mask=counts["mask"],
        replaced_by_random=counts["random"],
        unchanged=counts["unchanged"],
        nsp_is_next=counts["sequences"] - counts["nsp1"],
        nsp_random_next=counts["nsp1"],
        lengths=np.concatenate(lengths),
        predictions_per_sequence=np.concatenate(per_sequence),
    )


def masked_targets(shards: PathLike | Sequence[PathLike]) -> np.ndarray:
    """The original ids of every used prediction slot in ``shards`` (the MLM labels), flat."""
    found = []
    for path in find_shards(shards):
        a = load_shard(path)
        found.append(a["masked_lm_ids"][a["masked_lm_positions"] != 0].astype(np.int64))
    return np.concatenate(found)


def frequency_baseline(
    train_shards: PathLike | Sequence[PathLike],
    eval_shards: PathLike | Sequence[PathLike],
    vocab_size: int,
    smoothing: float = 0.01,
) -> dict[str, Any]:
    """What knowing only token frequencies achieves on the eval set, without any context.

    The "model" predicts every masked token with its frequency among the training
    labels (plus ``smoothing`` counts per token, so unseen tokens are not impossible):
    its MLM loss is the cross-entropy of the eval labels under that distribution, and
    its accuracy that of always answering the most frequent training label. A trained
    model that merely matches these numbers has learnt frequencies, not language.
    Returns ``mlm_loss``, ``mlm_accuracy`` and ``most_frequent`` (top ten training
    label ids with their shares).
    """
    train = masked_targets(train_shards)
    evald = masked_targets(eval_shards)
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + smoothing
    probs = counts / counts.sum()
    order = np.argsort(-counts)[:10]
    with np.errstate(divide="ignore"):  # an unseen token without smoothing: infinite loss
        loss = float(-np.log(probs[evald]).mean())
    return {
        "mlm_loss": loss,
        "mlm_accuracy": float((evald == order[0]).mean()),
        "most_frequent": [(int(i), float(probs[i])) for i in order],
    }


def plot_masking_statistics(stats: MaskingStatistics, path: PathLike | None = None) -> Figure:
    """Four panels: share of tokens predicted per sequence, 80/10/10, NSP balance, lengths."""
    fig = Figure(figsize=(15, 3.6), layout="constrained")
    ax_frac, ax_kind, ax_nsp, ax_len = fig.subplots(1, 4)

    per_seq = stats.predictions_per_sequence / np.maximum(stats.lengths, 1)
    ax_frac.hist(per_seq, bins=np.linspace(0.05, 0.25, 41), color="tab:blue")
    ax_frac.axvline(0.15, color="black", linestyle="--", label="15 %")
    ax_frac.set_title(f"chosen for prediction\n(mean {stats.fraction_predicted:.1%} of real tokens)")
    ax_frac.set_xlabel("predictions / real tokens, per sequence")
    ax_frac.set_ylabel("sequences")
    ax_frac.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax_frac.legend()

    shares = stats.shares
    bars = ax_kind.bar(list(shares), list(shares.values()), color=["tab:blue", "tab:orange", "tab:green"])
    ax_kind.bar_label(bars, labels=[f"{v:.1%}" for v in shares.values()])
    ax_kind.scatter(list(shares), [0.8, 0.1, 0.1], marker="_", s=600, color="black", zorder=3,
                    label="target 80/10/10")
    ax_kind.set_ylim(0, 1)
    ax_kind.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax_kind.set_title("input at a predicted position")
    ax_kind.legend()

    nsp = {"IsNext (0)": stats.nsp_is_next, "NotNext (1)": stats.nsp_random_next}
    bars = ax_nsp.bar(list(nsp), list(nsp.values()), color=["tab:purple", "tab:gray"])
    ax_nsp.bar_label(bars, labels=[f"{v / max(1, stats.sequences):.1%}" for v in nsp.values()])
    ax_nsp.axhline(stats.sequences / 2, color="black", linestyle="--", label="half")
    ax_nsp.set_ylim(0, max(nsp.values()) * 1.2)
    ax_nsp.set_title("next-sentence labels")
    ax_nsp.set_ylabel("sequences")
    ax_nsp.legend(loc="upper left")

    ax_len.hist(stats.lengths, bins=32, range=(0, stats.max_seq_length), color="tab:blue")
    ax_len.axvline(stats.max_seq_length, color="black", linestyle="--", label=f"T = {stats.max_seq_length}")
    ax_len.set_yscale("log")
    ax_len.set_title("real tokens per sequence\n(the rest is padding)")
    ax_len.set_xlabel("tokens")
    ax_len.set_ylabel("sequences (log scale)")
    ax_len.legend(loc="upper left")
    for ax in (ax_frac, ax_kind, ax_nsp, ax_len):
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Shards for a full run
# --------------------------------------------------------------------------------------------

#: The sample book and the split of ``data_samples/``: chapters 1-55 train, 56-61 eval.
SAMPLE_CORPUS = DATA_SAMPLES / "corpus" / "pride-and-prejudice.txt"
SAMPLE_SPLITS = {"train": (slice(0, 55), 5), "eval": (slice(55, 61), 2)}
_DONE = "COMPLETE"


def make_sample_shards(
    root: PathLike,
    max_seq_length: int = 512,
    *,
    vocab_file: PathLike = DATA_SAMPLES / "vocab.txt",
    seed: int = 12345,
    progress: bool = True,
) -> dict[str, str]:
    """Shards of the sample book at ``max_seq_length`` under ``root/train`` and ``root/eval``.

    The same split as ``data_samples/`` (held-out chapters for eval), made with
    :func:`bert_tutorial.create_data.create_pretraining_data` (what ``python -m
    bert_tutorial.create_data`` runs). A folder finished earlier (it holds a
    ``COMPLETE`` marker) is reused; an unfinished one is made again. Returns the
    ``TrainConfig`` fields ``train_data``, ``eval_data`` and ``vocab_file``.
    """
    from .create_data import InstanceOptions, create_pretraining_data

    root = Path(root)
    options = InstanceOptions(
        max_seq_length=max_seq_length,
        max_predictions_per_seq=default_max_predictions(max_seq_length),
    )
    for split, (documents, dupe_factor) in SAMPLE_SPLITS.items():
        folder = root / split
        if (folder / _DONE).is_file():
            continue
        create_pretraining_data(
            [SAMPLE_CORPUS], vocab_file, folder, options, prefix=split, input_format="gutenberg",
            documents=documents, dupe_factor=dupe_factor, shard_size=2500, seed=seed,
            overwrite=True, progress=progress,
        )
        (folder / _DONE).write_text(f"max_seq_length={max_seq_length}\n")
    return {"train_data": str(root / "train"), "eval_data": str(root / "eval"),
            "vocab_file": str(vocab_file)}


# --------------------------------------------------------------------------------------------
# A batch at a glance
# --------------------------------------------------------------------------------------------


def plot_batch(batch: Mapping[str, torch.Tensor], path: PathLike | None = None) -> Figure:
    """A batch as three images (rows = sequences, columns = positions).

    ``attention_mask`` (real tokens vs padding), ``token_type_ids`` (segment A vs B)
    and where ``labels`` is not -100 (the positions that carry an MLM label).
    """
    panels = [
        ("attention_mask", batch["attention_mask"], "attention_mask: 1 = real token"),
        ("token_type_ids", batch["token_type_ids"], "token_type_ids: 0 = segment A, 1 = B"),
        ("labels", batch["labels"] != IGNORE_INDEX, "labels != -100: MLM targets"),
    ]
    fig = Figure(figsize=(15, 3.2), layout="constrained")
    for ax, (_, values, title) in zip(fig.subplots(1, 3), panels, strict=True):
        ax.imshow(np.asarray(values, dtype=np.float32), aspect="auto", interpolation="nearest",
                  cmap="Greys", vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_xlabel("position")
        ax.set_ylabel("sequence in batch")
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# The original tutorial's pitfalls
# --------------------------------------------------------------------------------------------


def original_tutorial_labels(
    masked_lm_positions: Any, masked_lm_ids: Any, seq_length: int, fill: int = -1
) -> np.ndarray:
    """MLM labels the way the original tutorial built them, bugs included (for comparison only).

    It filled the labels with -1 (the ignore value of old BERT code; PyTorch's
    cross-entropy ignores -100, so -1 is an out-of-range class) and scattered *every*
    prediction slot, padded ones too: a padded slot has position 0 and id 0, which puts
    the label 0 ([PAD]) on [CLS]. Use :func:`bert_tutorial.data.build_mlm_labels`.
    """
    positions = np.asarray(masked_lm_positions, dtype=np.int64).reshape(-1)
    labels = np.full(seq_length, fill, dtype=np.int64)
    labels[positions] = np.asarray(masked_lm_ids, dtype=np.int64).reshape(-1)
    return labels


def _encode(bert: BertForPreTraining, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
            attention_mask: torch.Tensor) -> torch.Tensor:
    return bert.bert(input_ids=input_ids, token_type_ids=token_type_ids,
                     attention_mask=attention_mask, return_dict=True).last_hidden_state


@torch.no_grad()
def attention_mask_demo(model: nn.Module, sample: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """How much an all-ones attention mask changes the model's output for the real tokens.

    ``sample`` is one :class:`~bert_tutorial.data.PretrainingDataset` item (padded to T).
    The sequence is encoded three ways: trimmed to its real tokens (the reference),
    padded with the mask from the file, and padded with an all-ones mask (the original
    tutorial). With the right mask the padding is invisible (differences at float
    round-off); with all ones every real token also attends to the [PAD] positions, so
    the output (and the MLM loss) depends on how much padding the batch happened to need.
    Returns the largest absolute difference of the real tokens' hidden states from the
    reference, the MLM loss of the sample and the share of masked positions whose top
    prediction changes, for both masks.
    """
    bert = unwrap(model)
    was_training = bert.training
    bert.eval()
    try:
        device = next(bert.parameters()).device
        row = {k: v.to(device).unsqueeze(0) for k, v in sample.items() if v.dim() == 1}
        n = int(row["attention_mask"].sum())
        ids, types = row["input_ids"], row["token_type_ids"]
        reference = _encode(bert, ids[:, :n], types[:, :n], row["attention_mask"][:, :n])
        variants = {
            "correct_mask": _encode(bert, ids, types, row["attention_mask"]),
            "all_ones_mask": _encode(bert, ids, types, torch.ones_like(ids)),
        }
        slots = [(p, i) for p, i in zip(row["masked_lm_positions"][0].tolist(),
                                         row["masked_lm_ids"][0].tolist(), strict=True)
                 if p != 0 and i != IGNORE_INDEX]
        positions = torch.tensor([p for p, _ in slots], dtype=torch.long, device=device)
        targets = torch.tensor([i for _, i in slots], dtype=torch.long, device=device)
        ref_logits = bert.cls.predictions(reference[0, positions])
        result: dict[str, float] = {"real_tokens": float(n), "padding": float(ids.shape[1] - n)}
        result["mlm_loss_trimmed"] = float(nn.functional.cross_entropy(ref_logits, targets))
        for name, hidden in variants.items():
            logits = bert.cls.predictions(hidden[0, positions])
            result[f"max_abs_diff_{name}"] = float((hidden[:, :n] - reference).abs().max())
            result[f"mlm_loss_{name}"] = float(nn.functional.cross_entropy(logits, targets))
            changed = (logits.argmax(-1) != ref_logits.argmax(-1)).float().mean()
            result[f"top1_changed_{name}"] = float(changed)
        return result
    finally:
        bert.train(was_training)


def compare_mlm_heads(
    model: nn.Module, batch: Mapping[str, torch.Tensor], repeats: int = 3
) -> dict[str, dict[str, float]]:
    """Masked-only MLM head vs vocabulary logits on every position, on one batch.

    Both heads share the same weights and run in eval mode (no dropout), so their
    losses must agree; the masked-only head decodes ``B x P`` instead of ``B x T``
    positions. Reports per head: the loss, the number of logits (and their fp32 MiB)
    and the median seconds of a forward + backward pass over ``repeats`` runs.
    Gradients are cleared afterwards.
    """
    bert = unwrap(model)
    device = next(bert.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items()}
    b, t = inputs["input_ids"].shape
    p = inputs["masked_lm_positions"].shape[1]
    vocab = bert.config.vocab_size
    was_training = bert.training
    bert.eval()
    result: dict[str, dict[str, float]] = {}
    try:
        for name, sparse, positions in (("masked-only head", True, p), ("full head", False, t)):
            head = PretrainingModel(bert, sparse_mlm_head=sparse)
            times, loss = [], float("nan")
            for _ in range(max(1, repeats)):
                start = time.perf_counter()
                out = head(**inputs)
                out.loss.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
                loss = float(out.mlm_loss.detach())
                bert.zero_grad(set_to_none=True)
            logits = b * positions * vocab
            result[name] = {
                "mlm_loss": loss,
                "decoded_positions": float(b * positions),
                "logits": float(logits),
                "logits_mib_fp32": logits * 4 / 2**20,
                "seconds_fwd_bwd": statistics.median(times),
            }
    finally:
        bert.train(was_training)
    return result


# --------------------------------------------------------------------------------------------
# What the model learnt
# --------------------------------------------------------------------------------------------


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

    ``model`` is a ``BertForPreTraining`` or anything :func:`~bert_tutorial.model.unwrap`
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
    was_training = bert.training
    bert.eval()
    try:
        hidden = _encode(bert, enc["input_ids"], enc["token_type_ids"], enc["attention_mask"])
        where = (enc["input_ids"] == tokenizer.mask_token_id).nonzero()
        probs = bert.cls.predictions(hidden[where[:, 0], where[:, 1]]).float().softmax(-1)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    finally:
        bert.train(was_training)
    per_sentence: list[list[list[tuple[str, float]]]] = [[] for _ in sentences]
    for row, ids, values in zip(where[:, 0].tolist(), top.indices.tolist(), top.values.tolist(),
                                strict=True):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        per_sentence[row].append(list(zip(tokens, values, strict=True)))
    return [FillMaskResult(s, p) for s, p in zip(sentences, per_sentence, strict=True)]


def fill_mask_table(results: Mapping[str, Sequence[FillMaskResult]], top_k: int = 5) -> str:
    """Side-by-side text of :func:`fill_mask` results of several models (e.g. before/after).

    ``results`` maps a model's name to its results for the same sentences.
    """
    names = list(results)
    if not names:
        return ""
    lines = []
    first = results[names[0]]
    width = max(len(n) for n in names)
    for k, item in enumerate(first):
        lines.append(item.sentence)
        for m in range(len(item.predictions)):
            for name in names:
                options = results[name][k].predictions[m][:top_k]
                shown = ", ".join(f"{tok} {p:.1%}" for tok, p in options)
                label = f"  [MASK] {m + 1} " if len(item.predictions) > 1 else "  "
                lines.append(f"{label}{name.ljust(width)}: {shown}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot_before_after(
    metrics: Mapping[str, Mapping[str, float]], path: PathLike | None = None
) -> Figure:
    """Bars of MLM accuracy, NSP accuracy and MLM loss for several models (e.g. before/after).

    ``metrics`` maps a name to an :func:`~bert_tutorial.evaluation.evaluate` result.
    """
    names = list(metrics)
    colors = ["tab:gray", "tab:blue", "tab:orange", "tab:green"]
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    panels = (("mlm_accuracy", "MLM accuracy (masked tokens)"),
              ("nsp_accuracy", "NSP accuracy (sequences)"),
              ("mlm_loss", "MLM loss (cross-entropy)"))
    for ax, (key, title) in zip(fig.subplots(1, 3), panels, strict=True):
        values = [float(metrics[n][key]) for n in names]
        bars = ax.bar(names, values, color=[colors[i % len(colors)] for i in range(len(names))])
        is_share = key.endswith("accuracy")
        ax.bar_label(bars, labels=[f"{v:.1%}" if is_share else f"{v:.2f}" for v in values])
        top = max([*values, 0.0])
        if key == "nsp_accuracy":
            ax.axhline(0.5, color="black", linestyle="--", linewidth=1, label="50 %")
            ax.legend(loc="lower right")
            top = max(top, 0.5)
        ax.set_ylim(0, min(1.0, top * 1.2 + 0.01) if is_share else top * 1.15 + 0.01)
        if is_share:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)

