"""The training losses between two log lines, summed on the device.

Reading a loss back to the host waits for the GPU to finish the step, so the
Trainer adds each step's (MLM, NSP) losses on the device and reads them once per
log line, where DDP ranks exchange their shares anyway.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import torch

from .distributed import all_reduce_sum


class LossWindow:
    """Loss sums since the last log line, kept on the device so logging needs no per-step sync."""

    def __init__(self, device: torch.device, nsp: bool = True) -> None:
        self.device = device
        self.nsp = nsp  # False: masked LM only, the record has no NSP loss
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        self.steps = 0
        self.lr = math.nan  # a window flushed before any step reports no LR, not a crash
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the time spent inside out of the window's throughput."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - start

    def add(self, step_losses: torch.Tensor, lr: float) -> None:
        """This rank's share of one step's (MLM, NSP) loss (shares add up over ranks), its LR."""
        self.sums += step_losses
        self.steps += 1
        self.lr = lr

    def flush(self, step: int, epoch: int, samples_per_step: int) -> dict[str, Any]:
        """Mean per-step losses and the last LR (a collective under DDP: call on every rank)."""
        mlm, nsp = (all_reduce_sum(self.sums.clone()) / max(1, self.steps)).tolist()
        elapsed = time.perf_counter() - self.start
        losses = {"mlm_loss": mlm, "nsp_loss": nsp, "loss": mlm + nsp} if self.nsp else \
            {"mlm_loss": mlm, "loss": mlm}
        record = {
            "kind": "train", "step": step, "epoch": epoch, "lr": self.lr, **losses,
            "seq_per_s": self.steps * samples_per_step / elapsed if elapsed > 0 else math.nan,
        }
        self.reset()
        return record
