"""Looking at shards and single samples: what one training sequence really contains.

A shard row is six arrays of ids, already masked; nobody can read that. These
helpers turn rows back into text (each prediction slot shown as ``[seen→original]``,
so the 80/10/10 corruption is visible at a glance), a table of what happened at every
slot, and a collated batch as heatmaps. Samples may be raw shard rows or
:class:`~bert_tutorial.core.data.PretrainingDataset` items (tensors, unused slots set to
-100); both decode identically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from transformers import PreTrainedTokenizerBase

from ..core.data import IGNORE_INDEX, PathLike
from ..hdf5_format import inspect_shard, read_shard
from ..pretrain.curves import save_figure

#: Arrow between what the model sees at a prediction slot and the original token.
ARROW = "→"


def load_shard(path: PathLike, vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """All fields of one shard as numpy arrays (checked like the training reader checks them)."""
    return read_shard(inspect_shard(path), vocab_size)


def sample_at(arrays: Mapping[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    """Row ``index`` of every field of a loaded shard."""
    return {name: np.asarray(values[index]) for name, values in arrays.items()}


def _as_numpy(sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Tensors (dataset items) and arrays (shard rows) alike as numpy, so one code path reads both."""
    return {
        k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
        for k, v in sample.items()
    }


def _real_length(sample: Mapping[str, np.ndarray]) -> int:
    """Number of real (non-padding) tokens: from the mask, else up to the last non-zero id."""
    for key in ("input_mask", "attention_mask"):
        if key in sample:
            return int(sample[key].sum())
    nonzero = np.flatnonzero(sample["input_ids"])
    return int(nonzero[-1]) + 1 if nonzero.size else 0


@dataclass(frozen=True)
class MaskedToken:
    """One prediction slot: where it is, what the model sees there and what it must predict."""

    position: int
    seen: str
    original: str
    #: "[MASK]" (80 %), "random" (10 %: another word piece) or "unchanged" (10 %).
    kind: str


def masked_tokens(tokenizer: PreTrainedTokenizerBase, sample: Mapping[str, Any]) -> list[MaskedToken]:
    """The prediction slots of one sample, in position order.

    Works for a raw shard row (unused slots have position 0) and for a
    :class:`~bert_tutorial.core.data.PretrainingDataset` item (unused slots also hold -100).
    """
    row = _as_numpy(sample)
    input_ids = row["input_ids"].reshape(-1)
    positions = row["masked_lm_positions"].reshape(-1).tolist()
    result = []
    for position, original_id in zip(positions, row["masked_lm_ids"].reshape(-1).tolist(), strict=True):
        if position == 0 or original_id == IGNORE_INDEX:
            continue
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
    slots = {slot.position: slot for slot in masked_tokens(tokenizer, row)}
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in input_ids[:length]])
    pieces: list[str] = []
    glue_ok = False  # may the next "##" piece be glued to the previous output piece?
    for position, token in enumerate(tokens):
        if position in slots:
            slot = slots[position]
            seen = "MASK" if slot.kind == "[MASK]" else slot.seen
            pieces.append(f"[{seen}{ARROW}{slot.original}]")
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
# A batch at a glance
# --------------------------------------------------------------------------------------------

#: Padding has one colour in every panel, so it is never mistaken for segment A or "no label".
PADDING_COLOUR = "#d0d0d0"


def _category_panel(
    fig: Figure, ax: Axes, codes: np.ndarray, legend: Sequence[tuple[str, str]], title: str
) -> None:
    """Draw integer ``codes`` (0..n-1) with one listed colour each and a labelled colour bar."""
    names = [name for name, _ in legend]
    cmap = ListedColormap([colour for _, colour in legend])
    norm = BoundaryNorm(np.arange(len(legend) + 1) - 0.5, len(legend))
    image = ax.imshow(codes, aspect="auto", interpolation="nearest", cmap=cmap, norm=norm)
    bar = fig.colorbar(image, ax=ax, ticks=range(len(legend)), fraction=0.08, pad=0.02)
    bar.ax.set_yticklabels(names)
    bar.ax.tick_params(length=0)
    ax.set_title(title)
    ax.set_xlabel("position")


def batch_categories(batch: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per position of a collated batch: 0 = padding, else what the panel of :func:`plot_batch` shows.

    ``attention_mask``: 1 real token; ``token_type_ids``: 1 segment A, 2 segment B;
    ``labels``: 1 no MLM label, 2 MLM target. Padding is taken from the attention mask,
    because segment id 0 and "no label" are also what padded positions hold in the file.
    """
    real = np.asarray(batch["attention_mask"]) != 0
    segment = np.asarray(batch["token_type_ids"])
    target = np.asarray(batch["labels"]) != IGNORE_INDEX
    return {
        "attention_mask": real.astype(np.int64),
        "token_type_ids": np.where(real, 1 + segment, 0),
        "labels": np.where(real, 1 + target, 0),
    }


def plot_batch(batch: Mapping[str, torch.Tensor], path: PathLike | None = None) -> Figure:
    """A batch as three heatmaps (rows = sequences, columns = positions), each with a legend bar.

    ``attention_mask`` (real tokens vs padding), ``token_type_ids`` (segment A vs B)
    and where ``labels`` is not -100 (the positions that carry an MLM label). Padding
    is light grey everywhere (see :func:`batch_categories`).
    """
    codes = batch_categories(batch)
    panels = (
        ("attention_mask", [("padding (0)", PADDING_COLOUR), ("real token (1)", "tab:blue")],
         "attention_mask"),
        ("token_type_ids", [("padding", PADDING_COLOUR), ("segment A (0)", "tab:blue"),
                            ("segment B (1)", "tab:orange")], "token_type_ids"),
        ("labels", [("padding", PADDING_COLOUR), ("-100: no label", "white"),
                    ("MLM target", "tab:red")], "labels != -100: MLM targets"),
    )
    fig = Figure(figsize=(16, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (key, legend, title) in zip(axes, panels, strict=True):
        _category_panel(fig, ax, codes[key], legend, title)
    axes[0].set_ylabel("sequence in batch")
    return save_figure(fig, path)
