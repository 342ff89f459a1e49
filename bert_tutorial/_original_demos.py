"""Demos of the original tutorial's mistakes (temporary home; the lead merges them into original.py).

* :func:`original_tutorial_labels`: labels filled with -1 and a label on [CLS] from
  padded slots;
* :func:`attention_mask_demo`: an all-ones attention mask makes the output depend on
  the padding;
* :func:`compare_mlm_heads`: vocabulary logits on every position versus only on the
  masked ones: same loss, a fraction of the work.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import BertForPreTraining

from .data import IGNORE_INDEX
from .model import PretrainingModel, unwrap


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
