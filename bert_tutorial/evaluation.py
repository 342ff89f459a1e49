"""MLM/NSP evaluation over a whole data set.

The MLM loss is averaged over *masked tokens* (sum of token losses / number of
masked tokens), not over batches: batches hold different numbers of masked tokens,
so a mean of batch means weights some tokens more than others. Accuracy is
likewise correct / masked over the whole set.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from .data import move_batch
from .distributed import all_reduce_sum
from .model import eval_mode

_SUM_FIELDS = ("mlm_loss_sum", "mlm_correct", "mlm_count", "nsp_loss_sum", "nsp_correct", "nsp_count")


def finalize_metrics(totals: Mapping[str, float]) -> dict[str, float]:
    """Turn summed counts into the reported figures (pure, so it can be checked by hand)."""
    masked = totals["mlm_count"]
    sequences = totals["nsp_count"]
    mlm_loss = totals["mlm_loss_sum"] / masked if masked else float("nan")
    nsp_loss = totals["nsp_loss_sum"] / sequences if sequences else float("nan")
    return {
        "mlm_loss": mlm_loss,
        "mlm_accuracy": totals["mlm_correct"] / masked if masked else float("nan"),
        "nsp_loss": nsp_loss,
        "nsp_accuracy": totals["nsp_correct"] / sequences if sequences else float("nan"),
        "loss": mlm_loss + nsp_loss,
        "perplexity": math.exp(min(mlm_loss, 50.0)) if masked else float("nan"),
        "masked_tokens": int(masked),
        "sequences": int(sequences),
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Mapping[str, torch.Tensor]],
    device: torch.device | str = "cpu",
    autocast: AbstractContextManager | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """MLM loss, MLM accuracy, NSP accuracy and perplexity of ``model`` over ``loader``.

    ``model`` is a :class:`~bert_tutorial.model.PretrainingModel` (possibly wrapped).
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
    all_reduce_sum(totals)
    return finalize_metrics(dict(zip(_SUM_FIELDS, totals.tolist(), strict=True)))
