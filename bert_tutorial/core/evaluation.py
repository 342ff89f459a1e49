"""MLM/NSP evaluation over a whole data set, and the no-context baseline it must beat.

The MLM loss is averaged over *masked tokens* (sum of token losses / number of
masked tokens), not over batches: batches hold different numbers of masked tokens,
so a mean of batch means weights some tokens more than others. Accuracy is
likewise correct / masked over the whole set. :func:`frequency_baseline` is what
knowing only how often each token is a label achieves.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..hdf5_format import inspect_shard, read_shard
from .data import PathLike, find_shards, move_batch
from .model import eval_mode

_SUM_FIELDS = ("mlm_loss_sum", "mlm_correct", "mlm_count", "nsp_loss_sum", "nsp_correct", "nsp_count")


def finalize_metrics(totals: Mapping[str, float]) -> dict[str, float]:
    """Turn summed counts into the reported figures (pure, so it can be checked by hand).

    A model trained on masked LM only counts no NSP sequences: its figures are MLM's alone.
    """
    masked = totals["mlm_count"]
    sequences = totals["nsp_count"]
    mlm_loss = totals["mlm_loss_sum"] / masked if masked else float("nan")
    figures = {"mlm_loss": mlm_loss,
               "mlm_accuracy": totals["mlm_correct"] / masked if masked else float("nan")}
    if sequences:
        nsp_loss = totals["nsp_loss_sum"] / sequences
        figures |= {"nsp_loss": nsp_loss, "nsp_accuracy": totals["nsp_correct"] / sequences,
                    "loss": mlm_loss + nsp_loss}
    else:
        figures["loss"] = mlm_loss
    figures |= {"perplexity": math.exp(min(mlm_loss, 50.0)) if masked else float("nan"),
                "masked_tokens": int(masked)}
    if sequences:
        figures["sequences"] = int(sequences)
    return figures


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Mapping[str, torch.Tensor]],
    device: torch.device | str = "cpu",
    autocast: AbstractContextManager | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """MLM loss, MLM accuracy, NSP accuracy and perplexity of ``model`` over ``loader``.

    ``model`` is a :class:`~bert_tutorial.core.model.PretrainingModel` (possibly wrapped).
    Runs in eval mode (no dropout) and restores the previous mode afterwards, so it
    can be called in the middle of training. Under DDP each rank evaluates its own
    part and the sums are added across ranks.
    """
    device = torch.device(device)
    totals = torch.zeros(len(_SUM_FIELDS), dtype=torch.float64, device=device)
    with eval_mode(model):
        for batch in itertools.islice(loader, max_batches):
            with autocast or nullcontext():
                out = model(**move_batch(batch, device))
            totals += torch.stack([getattr(out, f).double() for f in _SUM_FIELDS])
    if dist.is_available() and dist.is_initialized():  # DDP: add up every rank's part
        dist.all_reduce(totals)
    return finalize_metrics(dict(zip(_SUM_FIELDS, totals.tolist(), strict=True)))


def masked_targets(shards: PathLike | Sequence[PathLike], vocab_size: int | None = None) -> np.ndarray:
    """The original ids of every used prediction slot in ``shards`` (the MLM labels), flat.

    Each shard is validated first (against ``vocab_size`` when given): a bad id is a
    ``ShardError`` naming the file, not an ``IndexError`` later."""
    found = []
    for path in find_shards(shards):
        a = read_shard(inspect_shard(path), vocab_size)
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
    train = masked_targets(train_shards, vocab_size)
    evald = masked_targets(eval_shards, vocab_size)
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
