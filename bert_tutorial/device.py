"""Choosing the device and the numeric precision, the same way everywhere.

bf16 autocast keeps fp32's exponent range, so it needs no loss scaling; fp16 does
(``GradScaler``) and is only used on GPUs without bf16. CPUs train in fp32: CPU
autocast is slow on most machines and buys nothing for a tutorial-sized model.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto" picks this process's GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """Concrete precision for ``device``: "fp32", "bf16" or "fp16"."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got '{precision}'")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 with loss scaling needs a CUDA device; use fp32 or bf16 on CPU")
    return precision


def autocast_context(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast region for the forward pass (nothing for fp32)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A scaler that is active only for fp16; bf16/fp32 get a disabled (pass-through) one."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
