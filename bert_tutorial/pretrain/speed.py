"""Speed tricks for a GPU that are not the method: plugged into the core by the Trainer.

Each one gives the same numbers as the plain path it replaces (tested): the host never
waits for the GPU (:func:`prepared_attention_mask` for ``PretrainingModel(prepare_mask=...)``,
:func:`fused_clip_and_step` for ``train_step(optimizer_step=...)``), and the switches of
``TrainConfig``'s speed section are applied in one place, :func:`speed_module` and
:func:`compiled`, which the Trainer and ``benchmarks/bench_step.py`` both call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers
from torch import nn
from transformers import BertForPreTraining

from ..config import ConfigError, TrainConfig
from ..core.model import PretrainingModel
from ..core.step import clip_and_step
from ..warn import warn_caller
from .fast_encoder import VARLEN_AVAILABLE, FastEncoder, half_precision_layernorm, varlen_supported

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


def fused_clip_and_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                        parameters: list[torch.Tensor], max_grad_norm: float, fold_clipping: bool = False,
                        ) -> tuple[torch.Tensor, bool | torch.Tensor, float | None]:
    """``train_step``'s ``optimizer_step`` for a GPU: a fused optimizer skips on the device.

    The core's :func:`~bert_tutorial.core.step.clip_and_step` reads the gradient norm on the
    host, which waits for the GPU every step. A fused optimizer takes the verdict as a
    device tensor instead (``found_inf``, the protocol ``GradScaler`` uses) and skips inside
    its kernel: the host never waits. ``updated`` is then a bool tensor, read when convenient.

    ``fold_clipping=True`` also hands the clipping to the kernel: ``clip_grad_norm_``
    multiplies every gradient by ``min(1, max_norm / (norm + 1e-6))`` (a read and a write of
    all gradients) before AdamW reads them again; the fused kernel divides each gradient by
    ``grad_scale`` as it reads it, so the clip factor's inverse goes there (the same update,
    one pass fewer). Not with an fp16 ``GradScaler``, which owns ``grad_scale``: the
    clipping then stays separate. Other optimizers fall back to the core's host check.
    """
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        return clip_and_step(optimizer, scaler, parameters, max_grad_norm)
    if fold_clipping and not scaler.is_enabled():
        grads = [p.grad for p in parameters if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        # clip_grad_norm_'s factor, as a divisor: max(1, (norm + 1e-6) / max_norm).
        divisor = torch.clamp((grad_norm + 1e-6) / max_grad_norm, min=1.0)
        return grad_norm, _step_on_device(optimizer, grad_norm, divisor.float()), None
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    if scaler.is_enabled():
        scaler.step(optimizer)  # passes its own found_inf to the kernel
        return grad_norm, torch.isfinite(grad_norm), None
    return grad_norm, _step_on_device(optimizer, grad_norm, None), None


def _step_on_device(optimizer: torch.optim.Optimizer, grad_norm: torch.Tensor,
                    grad_scale: torch.Tensor | None) -> torch.Tensor:
    """A fused optimizer's step that skips itself when ``grad_norm`` is not finite."""
    finite = torch.isfinite(grad_norm)
    optimizer.found_inf = (~finite).float()  # type: ignore[attr-defined]
    optimizer.grad_scale = grad_scale  # type: ignore[attr-defined]
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf, optimizer.grad_scale  # type: ignore[attr-defined]
    return finite


def speed_module(bert: BertForPreTraining, cfg: TrainConfig, device: torch.device,
                 precision: str = "fp32") -> PretrainingModel:
    """The ``PretrainingModel`` of ``cfg``: its objective, head and speed switches.

    ``--fused-qkv`` / ``--unpad`` run the encoder through :class:`FastEncoder` (the batches
    must then come through ``PackingCollate`` for ``--unpad``); ``--half-precision-layernorm``
    hooks every LayerNorm; on CUDA the stock encoder gets the sync-free padding mask.
    ``precision`` (the run's resolved one) only decides whether ``--unpad`` warns that its
    attention cannot use flash's varlen kernel on this GPU.
    """
    encoder = None
    if cfg.fused_qkv or cfg.unpad:
        _check_fast_encoder(bert)
        varlen = cfg.unpad and varlen_supported(device)
        if cfg.unpad and device.type == "cuda":
            _warn_without_varlen(bert, device, precision, varlen)
        encoder = FastEncoder(cfg.fused_qkv, cfg.unpad, varlen=varlen)
    if cfg.half_precision_layernorm:
        half_precision_layernorm(bert)
    on_gpu = device.type == "cuda"
    return PretrainingModel(bert, sparse_mlm_head=cfg.sparse_mlm_head,
                            prepare_mask=prepared_attention_mask if on_gpu and encoder is None else None,
                            nsp=cfg.objective == "mlm+nsp", encoder=encoder)


def _check_fast_encoder(bert: BertForPreTraining) -> None:
    """Refuse a BERT whose layers :class:`FastEncoder` would run wrongly (it runs BERT's own:
    absolute positions, an encoder without cross-attention)."""
    config = bert.config
    position = getattr(config, "position_embedding_type", "absolute")
    if position != "absolute" or config.is_decoder or config.add_cross_attention:
        raise ConfigError(
            f"--fused-qkv/--unpad run BERT's encoder layers by hand, for absolute position "
            f"embeddings and no decoder; this model has position_embedding_type {position!r}, "
            f"is_decoder {config.is_decoder}, add_cross_attention {config.add_cross_attention}")


def _warn_without_varlen(bert: BertForPreTraining, device: torch.device, precision: str,
                         varlen: bool) -> None:
    """Say why ``--unpad`` on this GPU attends through padded rows instead of flash's varlen."""
    if not VARLEN_AVAILABLE:
        why = f"torch {torch.__version__} has no torch.nn.attention.varlen (a newer torch has)"
    elif not varlen:
        why = f"{torch.cuda.get_device_name(device)} is older than compute capability 8.0"
    elif precision not in ("bf16", "fp16"):
        why = f"the kernel needs bf16 or fp16, and this run is {precision}"
    elif bert.config.attention_probs_dropout_prob:
        why = (f"the kernel has no attention dropout, and the model's is "
               f"{bert.config.attention_probs_dropout_prob}: add --attention-dropout 0")
    else:
        return
    warn_caller(f"--unpad: attention goes back to padded rows in every layer ({why}); the "
                "layers' other work is still unpadded, but the copies may cost what that saves")


def keep_grads_outside_cuda_graphs(model: nn.Module) -> None:
    """Give every trainable parameter a zero ``.grad`` made outside any CUDA graph.

    With CUDA graphs, a ``.grad`` that the first backward of a step creates lives in the
    graphs' memory pool, and the next micro-batch's replay may overwrite it (pytorch issue
    169545): accumulation would read garbage or stop with "accessing gradient tensor output
    of CUDAGraphs that has been overwritten". Gradients that exist before the first backward
    are accumulated into in place instead; ``train_step(keep_grad_buffers=True)`` then zeroes
    them after each step rather than freeing them.
    """
    for param in model.parameters():
        if param.requires_grad and param.grad is None:
            param.grad = torch.zeros_like(param)


def compiled(model: nn.Module, cfg: TrainConfig, device: torch.device,
             ) -> tuple[nn.Module, Callable[[], None] | None]:
    """``torch.compile(model)`` in ``cfg.compile_mode`` when ``cfg`` compiles on ``device``.

    Returns the model to call and ``train_step``'s ``before_forward``: a compile mode other
    than "default" replays CUDA graphs on CUDA, whose outputs live in buffers the next
    replay overwrites; ``torch.compiler.cudagraph_mark_step_begin`` before each micro-batch
    tells it that the previous one's outputs have been used (its backward has run). The
    gradients are then kept outside the graphs' memory (:func:`keep_grads_outside_cuda_graphs`,
    called here on ``model``, which must be on its device): ``before_forward`` not None means
    pass ``train_step(keep_grad_buffers=True)`` too.
    """
    if not compiles(cfg, device):
        return model, None
    mode = None if cfg.compile_mode == "default" else cfg.compile_mode
    if device.type != "cuda" or mode is None:
        return torch.compile(model, mode=mode), None
    keep_grads_outside_cuda_graphs(model)
    return torch.compile(model, mode=mode), torch.compiler.cudagraph_mark_step_begin


def compiles(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether ``cfg`` runs compiled on ``device``: ``compile``, None = on CUDA only."""
    return cfg.compile if cfg.compile is not None else device.type == "cuda"
