"""Choosing the device and the numeric precision, the same way everywhere.

bf16 autocast keeps fp32's exponent range, so it needs no loss scaling; fp16 does
(``GradScaler``). "auto" picks bf16 only where the GPU computes it natively (compute
capability 8.0, Ampere, and newer): on a T4, V100 or P100 (Colab's free GPUs among
them) bf16 is emulated — no tensor cores, the slowest attention kernel — so "auto"
means fp16 + GradScaler there. CPUs train in fp32 by default: bf16 autocast pays only on
CPUs with bf16 instructions (a BERT-base step 1.6x faster on a Zen 4 with AVX-512 BF16,
34-43x *slower* on a Zen 3 without; ``benchmarks/README.md``), and buys nothing for a
tutorial-sized model (bf16 and fp16 can still be asked for, e.g. to test the fp16 path
without a GPU).
"""

from __future__ import annotations

import typing
from contextlib import AbstractContextManager, nullcontext

import torch

from ..config import ConfigError, Precision

PRECISIONS = typing.get_args(Precision)


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto" picks this process's GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    count = _device_count(device.type)
    if count == 0:  # otherwise a traceback from deep inside torch at the first .to(device)
        raise ConfigError(f"--device (device) {name}: no {device.type} device is available here; "
                          "use --device auto (a GPU if there is one, else the CPU) or cpu")
    if count is not None and device.index is not None and device.index >= count:
        raise ConfigError(f"--device (device) {name}: this machine has {count} {device.type} "
                          f"device(s), numbered from 0")
    return device


def _device_count(kind: str) -> int | None:
    """How many devices of ``kind`` this process can use (None: not counted, e.g. the CPU)."""
    if kind == "cuda":
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "mps":
        return 1 if torch.backends.mps.is_available() else 0
    if kind == "xpu":
        xpu = getattr(torch, "xpu", None)
        return xpu.device_count() if xpu is not None and xpu.is_available() else 0
    return None


def resolve_precision(precision: str, device: torch.device) -> str:
    """Concrete precision for ``device``: "fp32", "bf16" or "fp16"."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"


def autocast_context(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast region for the forward pass (nothing for fp32)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A scaler that is active only for fp16; bf16/fp32 get a disabled (pass-through) one."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict) -> None:
    """Restore a scaler across a change of precision (a run may resume on other hardware).

    A disabled scaler saves ``{}``, and ``GradScaler.load_state_dict({})`` raises; an fp16
    run resumed from an fp32/bf16 checkpoint therefore starts a fresh scale search, and a
    run that no longer scales ignores the saved scale.
    """
    if scaler.is_enabled() and state:
        scaler.load_state_dict(state)
