"""AdamW with BERT's weight-decay exclusions, and the linear warmup/decay schedule.

``transformers.AdamW`` was removed in transformers 5; ``torch.optim.AdamW`` is the
replacement (and has a fused CUDA kernel). BERT excludes biases and LayerNorm
weights from weight decay: decaying a normalisation gain towards 0 only hurts.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..config import TrainConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (decayed) and biases/LayerNorm/other vectors (not decayed)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "LayerNorm" in name or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def uses_fused_adamw(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether :func:`build_optimizer` builds the fused AdamW: ``fused_adamw``, None = on CUDA."""
    return cfg.fused_adamw if cfg.fused_adamw is not None else device.type == "cuda"


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """``torch.optim.AdamW``; the fused kernel is used on CUDA unless switched off."""
    fused = uses_fused_adamw(cfg, device)
    return torch.optim.AdamW(
        parameter_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=cfg.adam_betas,
        eps=cfg.adam_eps,
        fused=fused or None,
    )


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    """Warmup length as a whole number of steps.

    The original tutorial passed ``0.1 * total`` (a float) to the scheduler; an integer
    makes the schedule well defined and identical after a resume.
    """
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    return int(math.ceil(total_steps * warmup_fraction))


def linear_warmup_decay(step: int, total_steps: int, warmup: int) -> float:
    """LR multiplier: 0 -> 1 over ``warmup`` steps, then 1 -> 0 at ``total_steps``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup: int) -> LambdaLR:
    """Linear warmup then linear decay to zero, stepped once per optimizer step."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return LambdaLR(optimizer, lambda step: linear_warmup_decay(step, total_steps, warmup))


def lr_schedule(cfg: TrainConfig, total_steps: int) -> list[float]:
    """The learning rate at every optimizer step, for plotting before training."""
    warmup = warmup_steps(total_steps, cfg.warmup_fraction)
    return [cfg.lr * linear_warmup_decay(s, total_steps, warmup) for s in range(total_steps)]
