"""Speed tricks for a GPU that are not the method: plugged into the core by the Trainer.

Each one gives the same numbers as the plain path it replaces (tested), and saves the
host from waiting for the GPU: :func:`prepared_attention_mask` for
``PretrainingModel(prepare_mask=...)``, :func:`fused_skip_or_step` for
``train_step(optimizer_step=...)``.
"""

from __future__ import annotations

import torch
import transformers

from ..core.step import skip_or_step

_TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])

#: What the additive mask adds to a padded key's score: -2^15, exact in fp32, bf16 and fp16.
#: Not the dtype's minimum: autocast casts the fp32 mask to bf16 or fp16 for attention, and
#: fp32's minimum becomes -inf in both (beyond their range, or rounded up past bf16's largest
#: value). -inf is harmless while a row has one real key, but a row whose keys are all padding
#: (an unpadded or packed batch) then has softmax(-inf, ..., -inf) = NaN. -2^15 leaves half of
#: fp16's range for the scores added to it, and still weighs a padded key exp(-32768 + s) = 0
#: in fp32, bf16 and fp16 alike, so rows with a real key get exactly what the minimum gave.
MASKED_SCORE = -(2.0**15)


def prepared_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A [B, T] 1/0 padding mask in the form BERT uses as it is, without reading its values.

    Given a [B, T] mask, transformers first asks ``mask.all()`` (to drop the mask and use
    flash attention when a batch has no padding). On a GPU that answer is a device-to-host
    copy: the CPU stops queueing kernels until the GPU has caught up, once per forward.
    Nearly every pre-training batch has padding, so the skip almost never pays; the Trainer
    gives this function to ``PretrainingModel(prepare_mask=...)`` on CUDA (on a CPU the
    check is free and the stock path is kept, so CPU results are unchanged).
    """
    if _TRANSFORMERS_MAJOR >= 5:
        # 5.x takes a 4-D mask as final: the additive form (0 = attend, MASKED_SCORE =
        # padding), broadcast over heads and query positions.
        keep = attention_mask[:, None, None, :].to(dtype)
        return (1.0 - keep) * MASKED_SCORE
    # 4.x turns a 3-D 1/0 mask into the additive form itself, without any check (with the
    # dtype's minimum: the -inf of an all-padding row under autocast is 4.x's own).
    return attention_mask[:, None, :]


def fused_skip_or_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                       grad_norm: torch.Tensor) -> tuple[bool | torch.Tensor, float | None]:
    """``train_step``'s ``optimizer_step`` for a GPU: a fused optimizer skips on the device.

    The core's :func:`~bert_tutorial.core.step.skip_or_step` reads the gradient norm on the
    host, which waits for the GPU every step. A fused optimizer takes the verdict as a
    device tensor instead (``found_inf``, the protocol ``GradScaler`` uses) and skips inside
    its kernel: the host never waits. ``updated`` is then a bool tensor, read when convenient.
    Other optimizers fall back to the host check.
    """
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        return skip_or_step(optimizer, scaler, grad_norm)
    finite = torch.isfinite(grad_norm)
    if scaler.is_enabled():
        scaler.step(optimizer)  # passes its own found_inf to the kernel
    else:
        optimizer.found_inf = (~finite).float()  # type: ignore[attr-defined]
        optimizer.grad_scale = None  # type: ignore[attr-defined]
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf, optimizer.grad_scale  # type: ignore[attr-defined]
    return finite, None
