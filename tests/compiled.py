"""Compiled against eager: the steps that tests/test_compile.py (CPU) and tests/test_gpu.py (CUDA) compare."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import pytest
import torch
from tiny import VOCAB_SIZE

from bert_tutorial.config import TrainConfig
from bert_tutorial.core.data import PretrainingDataset, find_shards
from bert_tutorial.core.model import build_model
from bert_tutorial.core.optim import build_optimizer, build_scheduler
from bert_tutorial.core.step import clip_and_step, train_step
from bert_tutorial.pretrain.device import autocast_context, make_grad_scaler
from bert_tutorial.pretrain.fast_encoder import pack_batch
from bert_tutorial.pretrain.speed import (
    compiled,
    fused_clip_and_step,
    speed_module,
)


@functools.cache
def inductor_problem() -> str | None:
    """Why ``torch.compile`` cannot run on this CPU, or None when it can.

    TorchInductor writes C++ for the CPU and needs a compiler (and its headers) to build it;
    a machine without one fails at the first compiled call, not at ``torch.compile``.
    """
    try:
        compiled = torch.compile(lambda x: (x * 2).sin().sum())
        compiled(torch.randn(8))
    except Exception as exc:  # any failure means the same thing here: inductor cannot build
        return f"torch.compile (TorchInductor) cannot compile on this machine: {exc}"
    return None


def skip_without_inductor() -> None:
    problem = inductor_problem()
    if problem:
        pytest.skip(problem)


def micro_batches(cfg: TrainConfig, steps: int, accum: int, size: int) -> list[list[dict[str, Any]]]:
    """``steps`` optimizer steps of ``accum`` micro-batches of ``size`` from the tiny train shards."""
    data = PretrainingDataset(find_shards(cfg.train_data), vocab_size=VOCAB_SIZE)
    loader = iter(torch.utils.data.DataLoader(data, batch_size=size))
    return [[next(loader) for _ in range(accum)] for _ in range(steps)]


def accumulated_steps(cfg: TrainConfig, steps: list[list[dict[str, Any]]], device: torch.device,
                      precision: str, compile_model: bool, **switches: Any) -> dict[str, Any]:
    """Run ``train_step`` over ``steps`` from seed-0 weights, eager or compiled.

    Returns each step's (MLM, NSP) losses, each step's accumulated gradient (all parameters
    flattened, read just before the optimizer uses it) and the final weights. No clipping
    (``max_grad_norm=inf``), so the gradient seen is the one backward made. ``switches``:
    ``TrainConfig`` speed fields (``unpad=True`` ...), built as the Trainer builds them.
    """
    torch.manual_seed(0)
    on_gpu = device.type == "cuda"
    cfg = dataclasses.replace(cfg, compile=compile_model, **switches)
    module = speed_module(build_model(cfg, VOCAB_SIZE), cfg, device, precision).to(device)
    model, before_forward = compiled(module, cfg, device)
    if cfg.unpad:
        steps = [[pack_batch(batch) for batch in micro] for micro in steps]
    optimizer = build_optimizer(module, cfg, device)
    scheduler = build_scheduler(optimizer, 100, 0)
    scaler = make_grad_scaler(device, precision)
    grads: list[torch.Tensor] = []

    def record_then_step(opt: torch.optim.Optimizer, scl: torch.amp.GradScaler, params: list[torch.Tensor],
                         max_norm: float) -> tuple[torch.Tensor, bool | torch.Tensor, float | None]:
        grads.append(torch.cat([p.grad.detach().float().flatten().cpu()
                                for p in module.parameters() if p.grad is not None]))
        if on_gpu:
            return fused_clip_and_step(opt, scl, params, max_norm, fold_clipping=cfg.fold_clipping)
        return clip_and_step(opt, scl, params, max_norm)

    losses = []
    for micro in steps:
        result = train_step(model, micro, optimizer, scheduler, device=device,
                            autocast=autocast_context(device, precision), scaler=scaler,
                            max_grad_norm=math.inf, optimizer_step=record_then_step,
                            before_forward=before_forward, keep_grad_buffers=before_forward is not None)
        losses.append(result.losses.float().cpu())
    weights = {k: v.detach().float().cpu() for k, v in module.state_dict().items()}
    return {"losses": torch.stack(losses), "grads": grads, "weights": weights}
