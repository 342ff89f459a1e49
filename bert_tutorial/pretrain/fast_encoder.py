"""BERT's encoder run by hand over Hugging Face's own modules: fused QKV and unpadding.

``BertModel.forward`` is a loop over layers; :class:`FastEncoder` runs the same loop with
the same modules (embeddings, each layer's ``attention.self.query/key/value``,
``attention.output``, ``intermediate``, ``output``), so parameter names, ``state_dict``
and checkpoints do not change. Two things differ, each behind a switch:

* ``fused_qkv``: the three projections of a layer become one matrix multiply with the
  three weights concatenated (one GEMM of 3H outputs instead of three of H: fewer, larger
  kernels). The concatenation runs at each forward; gradients flow back to the three
  ``nn.Linear`` weights as before.
* ``unpad``: the layers run on the real tokens only. A pre-training batch is 9-17 %
  padding at T=128 and about half at T=512 (benchmarks/README.md), and every GEMM,
  LayerNorm and GELU of the stock encoder works on the padding too. The loader packs each
  batch's real tokens into one row (:func:`pack_batch`, on the host, in the loader's
  workers) and attention runs per sequence: flash attention's variable-length kernel on a
  CUDA GPU of compute capability >= 8.0 (``torch.nn.attention.varlen``, bf16/fp16, no
  attention dropout), elsewhere the tokens are put back in their padded rows for attention
  only.

The packed row is padded to a multiple of :func:`packing_bucket` tokens so that its
length takes only a few values (``torch.compile`` compiles once per length, and CUDA
graphs need fixed shapes). The padding slots form a few extra "sequences" that attend only
to themselves, so every value stays finite and no real token sees them.

Tested on a CPU against the stock ``BertModel`` (fp32, dropout 0: loss and gradients
within 1e-5); the CUDA kernel against the padded path in tests/test_gpu.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.model import masked_hidden_states

#: What :func:`pack_batch` adds to a batch (the model's ``forward`` takes them as keywords).
PACKING_KEYS = ("token_index", "cu_seqlens", "packed_positions")

try:  # torch >= 2.10 on CUDA; older torch falls back to the padded attention
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn
except ImportError:  # pragma: no cover - depends on the torch version
    _varlen_attn = None

#: Whether this torch has flash attention's variable-length kernel (used on CUDA).
VARLEN_AVAILABLE = _varlen_attn is not None


def varlen_supported(device: torch.device) -> bool:
    """Whether flash's varlen kernel runs on ``device``: this torch has it, and the device is
    a CUDA GPU of compute capability 8.0 or newer (flash attention needs Ampere; a T4 or
    V100 takes the re-padded path)."""
    return VARLEN_AVAILABLE and device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def packing_bucket(batch_size: int, seq_length: int) -> int:
    """The packed row's length is a multiple of this: 1/32 of the batch's B x T slots,
    rounded up to a multiple of 64 tokens.

    At B=256, T=128 that is 1,024 of 32,768 slots, at B=32, T=512 512 of 16,384: the packed
    length takes a handful of values over a run, and the rounding adds at most 1/32 of
    padding back (half that on average).
    """
    return 64 * math.ceil(batch_size * seq_length / 32 / 64)


def pack_batch(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` plus the indices that pack its real tokens into one row (on the host).

    * ``token_index`` [N]: where each packed token sits in the flattened [B*T] batch; the
      padding slots at the end point to B*T, one row past it (a row of zeros there).
    * ``cu_seqlens`` [B+1+K] int32: where each sequence starts in the packed row, then the
      padding slots cut into K = ceil(bucket / T) "sequences" of at most T tokens (some
      empty), ending at N: flash attention's cumulative lengths, whose longest sequence is
      then T, and whose length is fixed for a given B and T.
    * ``packed_positions`` [B, P]: the masked positions in packed coordinates.

    N is the real token count rounded up to a multiple of :func:`packing_bucket`.
    """
    mask = batch["attention_mask"].bool()
    rows, length = mask.shape
    lengths = mask.sum(1)
    real = int(lengths.sum())
    bucket = packing_bucket(rows, length)
    total = max(bucket, math.ceil(real / bucket) * bucket)
    token_index = torch.full((total,), rows * length, dtype=torch.long)
    token_index[:real] = mask.flatten().nonzero().squeeze(1)
    pieces = math.ceil(bucket / length)  # the padding (< bucket tokens) in pieces of <= T
    starts = torch.zeros(rows + 1 + pieces, dtype=torch.int32)
    starts[1:rows + 1] = lengths.cumsum(0)
    starts[rows + 1:] = (real + length * torch.arange(1, pieces + 1)).clamp(max=total)
    # A token's place among its row's real tokens (its position when padding is a suffix).
    rank = mask.long().cumsum(1) - 1
    packed_positions = starts[:rows, None].long() + rank.gather(1, batch["masked_lm_positions"].long())
    return {**batch, "token_index": token_index, "cu_seqlens": starts,
            "packed_positions": packed_positions}


class PackingCollate:
    """A DataLoader ``collate_fn``: the default collation, then :func:`pack_batch`.

    A class, not a closure, so that loader worker processes can receive it.
    """

    def __call__(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return pack_batch(torch.utils.data.default_collate(samples))


#: ``attend(q, k, v, heads, dropout_p, scale) -> context``: q, k, v and context are
#: [..., tokens, H] (heads side by side, as the projections give them).
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, float, float], torch.Tensor]


class FastEncoder:
    """``PretrainingModel(encoder=...)``: BERT's encoder with ``fused_qkv`` and/or ``unpad``.

    Called with the ``BertModel`` and the batch, it returns the hidden states at the
    masked positions [B, P, H] and at each [CLS] token [B, H]: all the heads need.
    """

    def __init__(self, fused_qkv: bool = False, unpad: bool = False, varlen: bool = False) -> None:
        self.fused_qkv = fused_qkv
        self.unpad = unpad
        #: Whether unpadded attention may use flash's varlen kernel (a CUDA GPU of compute
        #: capability >= 8.0 and a torch that has it: :func:`varlen_supported`); it then
        #: does for bf16/fp16 projections without attention dropout.
        self.varlen = varlen

    def __repr__(self) -> str:
        return f"FastEncoder(fused_qkv={self.fused_qkv}, unpad={self.unpad}, varlen={self.varlen})"

    def __call__(self, bert: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                 attention_mask: torch.Tensor, masked_lm_positions: torch.Tensor,
                 packing: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        rows, length = input_ids.shape
        hidden = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # [B, T, H]
        keep = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, T]: True = attend
        if not self.unpad:
            attend: Attend = lambda q, k, v, heads, p, scale: _padded_attention(  # noqa: E731
                q, k, v, heads, keep, p, scale)
            for layer in bert.encoder.layer:
                hidden = self._layer(layer, hidden, attend)
            return masked_hidden_states(hidden, masked_lm_positions), hidden[:, 0]

        missing = [key for key in PACKING_KEYS if key not in packing]
        if missing:
            raise ValueError(f"unpad=True needs the batch packed by pack_batch (PackingCollate); "
                             f"missing {', '.join(missing)}")
        token_index, cu_seqlens = packing["token_index"], packing["cu_seqlens"]
        packed = _pack(hidden.flatten(0, 1), token_index)  # [N, H]

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, p: float,
                   scale: float) -> torch.Tensor:
            if self.varlen and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and p == 0.0:
                q, k, v = (t.unflatten(-1, (heads, -1)) for t in (q, k, v))  # [N, heads, d]
                # No scale argument (not in every torch that has the kernel): its default,
                # 1/sqrt(d), is BERT's. The longest "sequence" is T (pack_batch cuts the padding).
                out = _varlen_attn(q, k, v, cu_seqlens, cu_seqlens, length, length)
                return out.flatten(-2)
            return _repadded_attention(q, k, v, heads, token_index, rows, length, keep, p, scale)

        for layer in bert.encoder.layer:
            packed = self._layer(layer, packed, attend)
        cls_hidden = packed.index_select(0, cu_seqlens[:rows].long())
        return packed[packing["packed_positions"]], cls_hidden

    def _layer(self, layer: nn.Module, hidden: torch.Tensor, attend: Attend) -> torch.Tensor:
        """One ``BertLayer``: self-attention, residual + LayerNorm, feed-forward (HF's modules)."""
        attention = layer.attention.self
        if self.fused_qkv:
            weight = torch.cat([attention.query.weight, attention.key.weight, attention.value.weight])
            bias = torch.cat([attention.query.bias, attention.key.bias, attention.value.bias])
            q, k, v = F.linear(hidden, weight, bias).chunk(3, dim=-1)
        else:
            q, k, v = attention.query(hidden), attention.key(hidden), attention.value(hidden)
        heads = attention.num_attention_heads
        p = attention.dropout.p if attention.training else 0.0
        context = attend(q, k, v, heads, p, attention.attention_head_size ** -0.5)
        attended = layer.attention.output(context, hidden)  # dense, dropout, LayerNorm(x + input)
        return layer.output(layer.intermediate(attended), attended)


def _padded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                      keep: torch.Tensor, p: float, scale: float) -> torch.Tensor:
    """SDPA over [B, T, H] projections with a boolean padding mask (True = attend)."""
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))  # [B, h, T, d]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p, scale=scale)
    return out.transpose(1, 2).flatten(-2)


def _repadded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                        token_index: torch.Tensor, rows: int, length: int, keep: torch.Tensor,
                        p: float, scale: float) -> torch.Tensor:
    """Packed [N, H] projections put back in their [B, T] rows for SDPA, then packed again.

    Only attention sees the padding; the padding slots of the packed row write to (and
    read back zeros from) one spare row past the batch.
    """
    def repad(t: torch.Tensor) -> torch.Tensor:
        spare = t.new_zeros(rows * length + 1, t.size(-1))
        return spare.index_copy(0, token_index, t)[:-1].view(rows, length, -1)

    out = _padded_attention(repad(q), repad(k), repad(v), heads, keep, p, scale)
    return _pack(out.flatten(0, 1), token_index)


def _pack(flat: torch.Tensor, token_index: torch.Tensor) -> torch.Tensor:
    """The [B*T, H] rows at ``token_index``; the padding slots (index B*T) read a row of zeros
    appended past the batch's last token."""
    return torch.cat([flat, flat.new_zeros(1, flat.size(-1))]).index_select(0, token_index)


def half_precision_layernorm(model: nn.Module) -> list[Any]:
    """Make every LayerNorm return the autocast dtype under autocast; returns the hook handles.

    Autocast runs ``layer_norm`` in fp32 and returns fp32, so the residual stream, the
    dropouts and the adds between layers read and write fp32: twice the bytes of bf16.
    A forward hook casts the output to the autocast dtype; the normalisation itself is
    still computed in fp32. Outside autocast (fp32 runs, evaluation in fp32) nothing changes.
    """
    def cast(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        device = output.device.type
        if torch.is_autocast_enabled(device):
            return output.to(torch.get_autocast_dtype(device))
        return output

    return [m.register_forward_hook(cast) for m in model.modules() if isinstance(m, nn.LayerNorm)]
