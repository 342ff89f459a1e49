"""One optimizer step of MLM + NSP pre-training, with every ingredient passed in explicitly.

``train_step`` owns no state: the model, optimizer, scheduler and grad scaler are
arguments, so what it does is visible at the call site, and the ``Trainer``, the
benchmarks and notebook 05's plain loop all run the same step.

What a step does beyond ``loss.backward(); optimizer.step()``:

* **Gradient accumulation** over ``micro_batches``; under DDP the gradient all-reduce
  runs only on the last micro-batch (``no_sync`` for the others).
* **Loss normalisation by the whole step's masked tokens** (all micro-batches, all
  ranks), so every masked token weighs the same however the global batch is split.
* **Mixed precision** (an autocast context, and a ``GradScaler`` for fp16), gradient
  clipping, and skipping an update whose gradient is not finite.

How the gradient is clipped and the skip decided is a plug-in (``optimizer_step``):
:func:`clip_and_step` clips with ``clip_grad_norm_`` and reads the norm on the host, which
is free on a CPU; the run machinery passes versions that let a fused optimizer decide on
the GPU without waiting for it, or clip inside its kernel.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from .data import IGNORE_INDEX, move_batch

Batch = Mapping[str, torch.Tensor]
#: ``(optimizer, scaler, parameters, max_grad_norm) -> (grad norm before clipping, updated,
#: fp16 loss scale of a skipped update)``: clips the (unscaled) gradients of ``parameters``
#: (the model's, in its order: the norm's sum is then the same as ``clip_grad_norm_``'s on
#: ``model.parameters()``, to the last bit) and updates unless they are not finite.
OptimizerStep = Callable[[torch.optim.Optimizer, torch.amp.GradScaler, list[torch.Tensor], float],
                         tuple[torch.Tensor, bool | torch.Tensor, float | None]]


def _in_process_group() -> bool:
    return dist.is_available() and dist.is_initialized()


@dataclass
class StepResult:
    """What one optimizer step did. Tensors stay on the device: reading them syncs."""

    #: This rank's share of the step's (MLM, NSP) mean loss, float64; shares add up over ranks.
    losses: torch.Tensor
    #: Total gradient norm before clipping (inf or NaN when the update was skipped).
    grad_norm: torch.Tensor
    #: The learning rate this update used (the scheduler has moved on since).
    lr: float
    #: False when the gradient was not finite and the optimizer did not update. A bool tensor
    #: when the decision was made on the device (``optimizer_step=fused_clip_and_step`` with
    #: a fused optimizer): read it when convenient (reading it waits for the step to finish).
    updated: bool | torch.Tensor
    #: The fp16 loss scale at the time of a skipped update, when known on the host (None
    #: otherwise); an overflow at a scale >= 1 is GradScaler searching for its scale.
    loss_scale: float | None = None

    @property
    def mlm_loss(self) -> float:
        return float(self.losses[0])

    @property
    def nsp_loss(self) -> float:
        return float(self.losses[1])


def step_token_counts(micro_batches: Sequence[Batch], device: torch.device) -> tuple[Any, Any]:
    """(masked tokens, sequences) in this optimizer step over all ranks, each at least 1.

    Counted on the host from the CPU batches. In one process they stay Python numbers;
    under DDP they are summed over ranks with an all-reduce and stay on the device
    (reading them back would block the host every step).
    """
    masked = sum(int((b["masked_lm_ids"] != IGNORE_INDEX).sum()) for b in micro_batches)
    sequences = sum(b["next_sentence_label"].numel() for b in micro_batches)
    if not _in_process_group():
        return float(max(masked, 1)), float(max(sequences, 1))
    counts = torch.tensor([masked, sequences], dtype=torch.float32)
    if device.type == "cuda":
        # torch.tensor(..., device=cuda) copies from pageable memory, which blocks the host
        # until the GPU has finished its queue; from pinned memory the copy is queued instead.
        counts = counts.pin_memory()
    counts = counts.to(device, non_blocking=True)
    dist.all_reduce(counts)  # every rank gets the whole step's counts
    counts = counts.clamp(min=1)
    return counts[0], counts[1]


def train_step(
    model: nn.Module,
    micro_batches: Sequence[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    *,
    device: torch.device,
    autocast: AbstractContextManager | None = None,
    scaler: torch.amp.GradScaler | None = None,
    max_grad_norm: float = 1.0,
    optimizer_step: OptimizerStep | None = None,
    before_forward: Callable[[], None] | None = None,
    keep_grad_buffers: bool = False,
) -> StepResult:
    """One optimizer step over ``micro_batches`` (call it on every rank under DDP).

    ``model`` is a :class:`~bert_tutorial.core.model.PretrainingModel`, possibly wrapped in
    DDP and/or ``torch.compile``. ``autocast`` is the forward's precision context
    (``device.autocast_context``); ``scaler`` a ``GradScaler`` (a disabled one, or None,
    for fp32 and bf16). ``before_forward`` runs before each micro-batch's forward (CUDA
    graphs: ``torch.compiler.cudagraph_mark_step_begin``, so that a replay does not
    overwrite what the previous micro-batch still needs). ``keep_grad_buffers`` zeroes the
    gradients after the update instead of freeing them (CUDA graphs need gradient buffers
    made outside the graphs, kept for the whole run).
    """
    masked, sequences = step_token_counts(micro_batches, device)
    world = dist.get_world_size() if _in_process_group() else 1
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    losses = torch.zeros(2, dtype=torch.float64, device=device)
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        # Under DDP, all-reduce gradients once per step: skip it for all but the last micro-batch.
        sync = contextlib.nullcontext() if last or world == 1 else model.no_sync()
        if before_forward is not None:
            before_forward()
        with sync:
            with autocast or contextlib.nullcontext():
                out = model(**move_batch(batch, device))
            # Sums over the step's tokens, not per-micro-batch means: every token weighs the same.
            mlm, nsp = out.mlm_loss_sum / masked, out.nsp_loss_sum / sequences
            # DDP averages gradients over ranks; x world turns that average back into the sum.
            scaler.scale((mlm + nsp) * world).backward()
        losses += torch.stack([mlm.detach(), nsp.detach()]).double()
    scaler.unscale_(optimizer)  # clip the true gradient, not the fp16-scaled one
    lr = optimizer.param_groups[0]["lr"]
    grad_norm, updated, loss_scale = (optimizer_step or clip_and_step)(
        optimizer, scaler, list(model.parameters()), max_grad_norm)
    scaler.update()
    with warnings.catch_warnings():  # a skipped first update is not the misuse torch warns of
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler")
        scheduler.step()  # the LR follows the step count, skipped updates included
    optimizer.zero_grad(set_to_none=not keep_grad_buffers)
    return StepResult(losses=losses, grad_norm=grad_norm, lr=lr, updated=updated, loss_scale=loss_scale)


def clip_and_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                  parameters: list[torch.Tensor], max_grad_norm: float,
                  ) -> tuple[torch.Tensor, bool, float | None]:
    """Clip the global norm of ``parameters``' gradients to ``max_grad_norm``, then
    :func:`skip_or_step`. Returns (norm before clipping, updated, fp16 scale of a skipped step).
    """
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    return (grad_norm, *skip_or_step(optimizer, scaler, grad_norm))


def skip_or_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 grad_norm: torch.Tensor) -> tuple[bool, float | None]:
    """Update unless the gradient is NaN/inf. Returns (updated, fp16 scale of a skipped step).

    The verdict is read on the host: one sync per step, free on a CPU.
    """
    if bool(torch.isfinite(grad_norm)):
        scaler.step(optimizer)
        return True, None
    return False, scaler.get_scale() if scaler.is_enabled() else None
