"""Timing a repeated step correctly on a CPU or a GPU: the one timing loop of the project.

CUDA runs asynchronously: a Python timer around a step measures how long it took to
*queue* the kernels, not to run them. So on a GPU each step is bracketed by CUDA events
and the device is synchronised once at the end; on a CPU the wall clock is right.
Warm-up steps run first and are not timed (allocator growth, cuDNN/SDPA autotuning,
``torch.compile`` tracing).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for every queued kernel on ``device`` (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], object], device: torch.device, warmup: int, steps: int) -> list[float]:
    """Seconds of each of ``steps`` calls of ``step``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type != "cuda":
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return times
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(steps)]
    for begin, end in events:
        begin.record()
        step()
        end.record()
    synchronize(device)
    return [begin.elapsed_time(end) / 1000.0 for begin, end in events]
