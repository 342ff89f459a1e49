"""The original tutorial's code, re-created faithfully: the "before" of every comparison.

The tutorial this project re-does continued pre-training ``bert-base-uncased`` from
NVIDIA-format HDF5 shards. Its eight steps worked on small examples but had problems;
this module reproduces its behaviour (not its text), problems included, so that the
notebooks and the benchmark can put it next to this project's code, on real data. Each
function's docstring names the step it re-creates and what goes wrong there.

Its -1 labels are consistent with its own ``ignore_index=-1``; what goes wrong with them
is the scatter of every prediction slot (:func:`labels`). Demonstrations that need a
model (:func:`compare_mlm_heads`, :func:`data_parallel_demo`) live here too. Use the rest
of the package for real work.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset
from transformers import get_linear_schedule_with_warmup

from ..core.data import IGNORE_INDEX
from ..core.model import PretrainingModel, eval_mode, unwrap
from .timing import time_steps

#: The batch keys the original's dataset returned (its NSP key is plural, as in the files).
ORIGINAL_KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
                 "masked_lm_ids", "next_sentence_labels")


class OriginalDataset(Dataset[dict[str, torch.Tensor]]):
    """The original's dataset: the whole corpus in Python lists, an attention mask of ones.

    Reads ``input_ids``, ``segment_ids``, ``masked_lm_positions``, ``masked_lm_ids`` and
    ``next_sentence_labels`` of every ``*.hdf5`` file in ``data_dir`` into lists of
    per-row arrays (memory grows with the corpus, and start-up reads all of it), ignores
    the file's ``input_mask`` and makes the attention mask ones over the file's row
    length T (the row's padding included), then zero-pads (or cuts) every field, the mask
    and the prediction slots included, to ``max_seq_length`` (512 in the original,
    whatever T the shards have): positions T..max_seq_length-1 get mask 0.
    """

    def __init__(self, data_dir: str | Path, max_seq_length: int = 512) -> None:
        self.max_seq_length = max_seq_length
        fields = ("input_ids", "segment_ids", "masked_lm_positions", "masked_lm_ids",
                  "next_sentence_labels")
        self.rows: dict[str, list[np.ndarray]] = {name: [] for name in fields}
        for path in sorted(Path(data_dir).glob("*.hdf5")):
            with h5py.File(path, "r") as f:
                for name, rows in self.rows.items():
                    rows.extend(f[name][()])

    def __len__(self) -> int:
        return len(self.rows["input_ids"])

    def _padded(self, values: np.ndarray) -> torch.Tensor:
        row = np.zeros(self.max_seq_length, dtype=np.int64)
        n = min(len(values), self.max_seq_length)
        row[:n] = values[:n]
        return torch.as_tensor(row)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        input_ids = self.rows["input_ids"][index]
        attention_mask = np.ones_like(input_ids)  # "assuming all tokens have attention_mask = 1"
        return {
            "input_ids": self._padded(input_ids),
            "token_type_ids": self._padded(self.rows["segment_ids"][index]),
            "attention_mask": self._padded(attention_mask),  # ones over T, zeros beyond
            "masked_lm_positions": self._padded(self.rows["masked_lm_positions"][index]),
            "masked_lm_ids": self._padded(self.rows["masked_lm_ids"][index]),
            "next_sentence_labels": torch.as_tensor(int(self.rows["next_sentence_labels"][index])),
        }


def to_original_batch(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A :class:`~bert_tutorial.core.data.PretrainingDataset` batch as the original's dataset gives it.

    Same rows without extra padding (``max_seq_length`` = the shards' T): an all-ones
    attention mask, and the raw prediction slots (padded ones at position 0 with id 0)
    zero-padded to T like the token rows.
    """
    input_ids = batch["input_ids"]
    pad = input_ids.shape[-1] - batch["masked_lm_positions"].shape[-1]
    ids = batch["masked_lm_ids"].masked_fill(batch["masked_lm_ids"] == IGNORE_INDEX, 0)
    return {
        "input_ids": input_ids,
        "token_type_ids": batch["token_type_ids"],
        "attention_mask": torch.ones_like(input_ids),
        "masked_lm_positions": nn.functional.pad(batch["masked_lm_positions"], (0, pad)),
        "masked_lm_ids": nn.functional.pad(ids, (0, pad)),
        "next_sentence_labels": batch["next_sentence_label"],
    }


def labels(masked_lm_positions: torch.Tensor, masked_lm_ids: torch.Tensor) -> torch.Tensor:
    """MLM labels built the original's way: -1 everywhere, then scatter every slot.

    The label tensor has the shape of ``masked_lm_positions`` ([B, max_seq_length] after
    the dataset's padding, which is also the input's length). Padded slots scatter id 0
    onto position 0: every sequence gets the label ``[PAD]`` on ``[CLS]``.
    Use :func:`bert_tutorial.core.data.build_mlm_labels` instead.
    """
    labels = torch.full(masked_lm_positions.shape, -1, dtype=torch.long,
                        device=masked_lm_positions.device)
    return labels.scatter_(-1, masked_lm_positions.long(), masked_lm_ids.long())


def _forward(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[Any, torch.Tensor]:
    """The original's forward pass (the model is given no labels) and its scattered labels."""
    outputs = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                    attention_mask=batch["attention_mask"])
    return outputs, labels(batch["masked_lm_positions"], batch["masked_lm_ids"])


def _mlm_loss(scores: torch.Tensor, labels: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The original's cross-entropy over every position, skipping its ``-1`` labels."""
    return nn.CrossEntropyLoss(ignore_index=-1)(scores.view(-1, vocab_size), labels.view(-1))


def loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """MLM + NSP loss as the original computed it (``batch`` already on the model's device).

    Vocabulary logits on every position, ``CrossEntropyLoss(ignore_index=-1)`` over
    ``model.config.vocab_size``: an ``AttributeError`` once the model is wrapped in
    ``nn.DataParallel``, since ``config`` is an attribute of ``BertForPreTraining`` only.
    """
    outputs, labels = _forward(model, batch)
    mlm = _mlm_loss(outputs.prediction_logits, labels, model.config.vocab_size)
    nsp = nn.CrossEntropyLoss()(outputs.seq_relationship_logits.view(-1, 2),
                                batch["next_sentence_labels"].view(-1))
    return mlm + nsp


def optimizer(model: nn.Module, lr: float = 1e-3) -> torch.optim.AdamW:
    """AdamW over all parameters, weight decay on biases and LayerNorm too, lr 1e-3.

    ``transformers.AdamW`` no longer exists (transformers 5); ``torch.optim.AdamW`` with
    its eps and the per-parameter loop (``foreach=False``) behaves like it did.
    """
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, eps=1e-6, foreach=False)


def scheduler(optimizer: torch.optim.Optimizer, total_steps: int) -> LambdaLR:
    """Linear warmup/decay with ``num_warmup_steps = 0.1 * total_steps``, a float (it works)."""
    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0.1 * total_steps,
                                           num_training_steps=total_steps)


def train_step(model: nn.Module, batch: Mapping[str, torch.Tensor],
                        optimizer: torch.optim.Optimizer, scheduler: LambdaLR,
                        device: torch.device, max_grad_norm: float | None = None) -> torch.Tensor:
    """One step of the original loop: fp32, no clipping (unless asked), no accumulation."""
    inputs = {k: batch[k].to(device) for k in ORIGINAL_KEYS}  # one blocking copy per tensor
    value = loss(model, inputs)
    value.backward()
    if max_grad_norm is not None:  # not in the original; lets the benchmark do equal bookkeeping
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return value.detach()


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, device: torch.device,
                      batch_size: int = 16) -> dict[str, float]:
    """The original's ``mlm_evaluation``: a mean of batch means, accuracy counting [CLS].

    MLM loss per batch with the original labels, averaged over batches (a token in a
    small batch weighs more); accuracy over every position whose label is not -1, which
    includes the spurious ``[PAD]``-on-``[CLS]`` label of every sequence. The model is
    left in eval mode, as the original left it.
    """
    model.eval()
    total_loss, batches, correct, labelled = 0.0, 0, 0, 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        outputs, labels = _forward(model, {k: batch[k].to(device) for k in ORIGINAL_KEYS})
        scores = outputs.prediction_logits
        total_loss += float(_mlm_loss(scores, labels, scores.size(-1)))
        batches += 1
        keep = labels != -1
        correct += int((scores.argmax(-1)[keep] == labels[keep]).sum())
        labelled += int(keep.sum())
    return {"mlm_loss": total_loss / max(batches, 1), "mlm_accuracy": correct / max(labelled, 1),
            "labelled_tokens": labelled}


# --- demonstrations that need a model -----------------------------------------------------------


def compare_mlm_heads(model: nn.Module, batch: Mapping[str, torch.Tensor],
                      repeats: int = 3) -> dict[str, dict[str, float]]:
    """The sparse MLM head (masked positions only) vs logits on every position, one batch.

    Same weights, eval mode (no dropout), so the losses must agree; the sparse head
    decodes ``B x P`` positions instead of ``B x T``. Per head: the loss, the number of
    logits (and their fp32 MiB) and the median seconds of forward + backward.
    """
    bert = unwrap(model)
    device = next(bert.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items()}
    (b, t), p = inputs["input_ids"].shape, inputs["masked_lm_positions"].shape[1]
    result: dict[str, dict[str, float]] = {}
    with eval_mode(bert):
        for name, sparse, positions in (("sparse head", True, p), ("full head", False, t)):
            head = PretrainingModel(bert, sparse_mlm_head=sparse)
            losses: list[float] = []

            def step(head: PretrainingModel = head, losses: list[float] = losses) -> None:
                out = head(**inputs)
                out.loss.backward()
                losses.append(float(out.mlm_loss.detach()))
                bert.zero_grad(set_to_none=True)

            times = time_steps(step, device, warmup=0, steps=max(1, repeats))
            logits = b * positions * bert.config.vocab_size
            result[name] = {"mlm_loss": losses[-1], "decoded_positions": float(b * positions),
                            "logits": float(logits), "logits_mib_fp32": logits * 4 / 2**20,
                            "seconds_fwd_bwd": statistics.median(times)}
    return result


DATA_PARALLEL_NOTE = """\
nn.DataParallel is one process driving all GPUs from Python threads. Every forward it
copies the model from cuda:0 to the other GPUs, splits the batch, runs the replicas,
and gathers the outputs back on cuda:0, where the loss, the backward's reduction and
the optimizer step happen. cuda:0 therefore does more work and holds more memory than
the others, the GIL serialises the threads, and it cannot span machines.
DistributedDataParallel runs one process per GPU with its own data loader and
optimizer; only gradients travel (all-reduced over NCCL, overlapped with the
backward). PyTorch recommends DDP even on a single machine."""


def data_parallel_demo(make_model: Any, batch: Mapping[str, torch.Tensor],
                       device_ids: list[int], steps: int = 10) -> dict[str, float]:
    """Sequences/s of the original's step alone on ``device_ids[0]`` and in ``nn.DataParallel``.

    ``make_model()`` returns a fresh ``BertForPreTraining`` (same weights each call);
    both get the same global ``batch``. The original's ``model.config.vocab_size`` fails
    on the wrapper, so the loss here takes the vocabulary size from the logits. On a
    machine without CUDA, DataParallel passes straight through (how it is tested).
    """
    device = torch.device("cuda", device_ids[0]) if torch.cuda.is_available() else torch.device("cpu")
    inputs = {k: v.to(device) for k, v in to_original_batch(batch).items()}
    rates = {}
    for name, model in (("single", make_model().to(device)),
                        ("data_parallel", nn.DataParallel(make_model().to(device), device_ids))):
        adamw = optimizer(model, lr=1e-4)

        def step(model: nn.Module = model, adamw: torch.optim.Optimizer = adamw) -> None:
            outputs, labels = _forward(model, inputs)
            scores = outputs.prediction_logits
            _mlm_loss(scores, labels, scores.size(-1)).backward()
            adamw.step()
            adamw.zero_grad()

        model.train()
        seconds = sum(time_steps(step, device, warmup=2, steps=steps))
        rates[f"{name}_seq_per_s"] = steps * inputs["input_ids"].shape[0] / seconds
    rates["speedup"] = rates["data_parallel_seq_per_s"] / rates["single_seq_per_s"]
    rates["gpus"] = float(len(device_ids))
    return rates
