"""The model and its pre-training loss: MLM + NSP with a masked-only MLM head.

``BertForPreTraining`` computes vocabulary logits for every one of the T positions,
although only ~15 % of them carry a label. At T=128 and a 30k vocabulary that
decoder is the largest matrix multiply of the whole step. ``PretrainingModel``
gathers the hidden states of the masked positions first and decodes only those:
the loss is identical, the work is ~6x smaller.

The loss lives inside an ``nn.Module`` on purpose: DistributedDataParallel and
``torch.compile`` wrap a module's ``forward``, so the whole computation that
produces the loss must run through it for gradients to be synchronised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForPreTraining
from transformers.utils import logging as hf_logging

from ..config import ConfigError, TrainConfig
from .data import IGNORE_INDEX


def build_model(cfg: TrainConfig, vocab_size: int) -> BertForPreTraining:
    """A pretrained BERT (continued pre-training) or a fresh one sized by ``cfg``.

    ``vocab_size`` is the size of the vocabulary the data was made with; a model with
    a smaller embedding table would index out of range (a CUDA device-side assert).
    """
    if cfg.model_name_or_path:
        model = load_pretrained(cfg.model_name_or_path, cfg.attn_implementation)
        if cfg.attention_dropout is not None:
            set_attention_dropout(model, cfg.attention_dropout)
    else:
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_position_embeddings,
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout if cfg.attention_dropout is None else cfg.attention_dropout,
        )
        config._attn_implementation = cfg.attn_implementation
        model = BertForPreTraining(config)
    check_vocab(model, vocab_size, source=cfg.model_name_or_path or "TrainConfig")
    return model


def set_attention_dropout(bert: nn.Module, p: float) -> None:
    """Set every self-attention's dropout on the attention probabilities (and the config)."""
    bert.config.attention_probs_dropout_prob = p
    for module in bert.modules():
        if hasattr(module, "query") and isinstance(getattr(module, "dropout", None), nn.Dropout):
            module.dropout.p = p
            if hasattr(module, "dropout_prob"):  # transformers 4.x's SDPA attention reads this
                module.dropout_prob = p


def load_pretrained(name_or_path: str, attn_implementation: str = "sdpa") -> BertForPreTraining:
    """``from_pretrained`` in float32, whatever dtype the weights were stored in.

    Weights may be stored in half precision to save space (the sample model in
    ``data_samples/base-model`` is fp16), and transformers 5 keeps the stored dtype.
    Training keeps fp32 master weights; autocast handles bf16/fp16 compute.
    """
    _refuse_lfs_pointers(Path(name_or_path))
    hf_logging.disable_progress_bar()  # no "Loading weights" bar per load in notebooks and logs
    try:
        model = BertForPreTraining.from_pretrained(name_or_path, attn_implementation=attn_implementation)
    # A mistyped folder becomes a hub lookup (OSError): say both. A truncated weights file
    # raises safetensors' own SafetensorError (an Exception), torch's a RuntimeError.
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{name_or_path}: cannot load a model from it ({reason}); --model-name-or-path takes "
            "a folder holding config.json and the weights, or a Hugging Face Hub name (online)"
        ) from exc
    finally:
        hf_logging.enable_progress_bar()
    return model.float() if model.dtype != torch.float32 else model


#: How a Git LFS pointer file starts: a clone without ``git lfs`` holds these, not the weights.
LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def _refuse_lfs_pointers(folder: Path) -> None:
    """Name a weights file that is a Git LFS pointer (a hundred bytes of text, not weights)."""
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if path.suffix in (".safetensors", ".bin") and path.is_file():
            with path.open("rb") as f:
                if f.read(len(LFS_POINTER)) == LFS_POINTER:
                    raise ConfigError(
                        f"{path}: a Git LFS pointer ({path.stat().st_size} bytes), not the weights: "
                        "the repository was cloned without Git LFS; run `git lfs pull` there (or "
                        "download the file)")


def check_vocab(model: BertForPreTraining, vocab_size: int, source: str) -> None:
    """Refuse a model whose embedding table cannot hold every token id of the data."""
    model_vocab = model.config.vocab_size
    if model_vocab < vocab_size:
        raise ConfigError(
            f"{source}: model vocab_size {model_vocab} is smaller than the data's vocabulary "
            f"({vocab_size} tokens); token ids would index past the embedding table"
        )


class PretrainingOutput(NamedTuple):
    """Per-batch mean losses plus sums that aggregate exactly over many batches.

    Sums and counts (not means) are kept so that evaluation can average over every
    masked token of the data set instead of averaging batch means, and so that training
    can normalise by the masked tokens of a whole optimizer step (see ``step``). A NamedTuple
    because DDP and ``torch.compile`` look for tensors inside a module's outputs, and
    tuples are a structure both understand.
    """

    loss: torch.Tensor
    mlm_loss: torch.Tensor
    nsp_loss: torch.Tensor
    mlm_loss_sum: torch.Tensor
    mlm_correct: torch.Tensor
    mlm_count: torch.Tensor
    nsp_loss_sum: torch.Tensor
    nsp_correct: torch.Tensor
    nsp_count: torch.Tensor


class PretrainingModel(nn.Module):
    """Wraps ``BertForPreTraining`` and returns MLM and NSP losses reported separately.

    ``sparse_mlm_head=False`` runs the stock head over all positions, as the
    original tutorial did; it exists to demonstrate (and test) that both agree.
    ``nsp=False`` trains masked LM only: the NSP head (and the pooler that feeds it) is
    frozen (on ``bert`` itself: they stay frozen if it is wrapped again), left out of the
    loss, and its count is 0, which evaluation reads as "no NSP"; the NSP loss fields then
    read 0.
    ``prepare_mask`` (``(mask, dtype) -> mask``) may turn the [B, T] padding mask into
    another form BERT accepts before the encoder sees it (a speed trick on a GPU, see
    :func:`bert_tutorial.pretrain.speed.prepared_attention_mask`).
    ``encoder`` may replace ``BertModel``'s own forward by another loop over the same
    modules (``(bert, input_ids, token_type_ids, attention_mask, masked_lm_positions,
    extra batch keys) -> (hidden states at the masked positions, at [CLS])``: see
    :class:`bert_tutorial.pretrain.fast_encoder.FastEncoder`); it needs the masked-only head.
    """

    def __init__(self, bert: BertForPreTraining, sparse_mlm_head: bool = True,
                 prepare_mask: Callable[[torch.Tensor, torch.dtype], torch.Tensor] | None = None,
                 nsp: bool = True, encoder: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
                 ) -> None:
        super().__init__()
        if encoder is not None and not sparse_mlm_head:
            raise ValueError("an encoder other than BertModel's own returns the masked positions' "
                             "hidden states only: it needs sparse_mlm_head=True")
        self.bert = bert
        self.sparse_mlm_head = sparse_mlm_head
        self.prepare_mask = prepare_mask
        self.nsp = nsp
        self.encoder = encoder
        if not nsp:
            # Weights no loss reaches: frozen, so that the optimizer leaves them as they are
            # and DDP does not wait for gradients that never come.
            for param in (*bert.bert.pooler.parameters(), *bert.cls.seq_relationship.parameters()):
                param.requires_grad_(False)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        next_sentence_label: torch.Tensor,
        masked_lm_positions: torch.Tensor,
        masked_lm_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        **extra: torch.Tensor,
    ) -> PretrainingOutput:
        heads = self.bert.cls
        if self.encoder is not None:
            hidden, cls_hidden = self.encoder(self.bert.bert, input_ids, token_type_ids, attention_mask,
                                              masked_lm_positions, extra)
            nsp_logits = heads.seq_relationship(self.bert.bert.pooler(cls_hidden[:, None])) if self.nsp else None
            return pretraining_loss(heads.predictions(hidden), masked_lm_ids, nsp_logits, next_sentence_label)
        if extra:
            raise TypeError(f"unexpected batch key(s) {', '.join(sorted(extra))}: only an encoder "
                            "other than BertModel's own takes more")
        if self.prepare_mask is not None:
            attention_mask = self.prepare_mask(attention_mask, self.bert.dtype)
        encoded = self.bert.bert(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            return_dict=True,
        )
        hidden, targets = encoded.last_hidden_state, labels
        if self.sparse_mlm_head:
            hidden, targets = masked_hidden_states(hidden, masked_lm_positions), masked_lm_ids
        elif labels is None:
            raise ValueError("the full MLM head needs 'labels' of shape [B, T]")
        nsp_logits = heads.seq_relationship(encoded.pooler_output) if self.nsp else None
        return pretraining_loss(heads.predictions(hidden), targets, nsp_logits, next_sentence_label)


def masked_hidden_states(hidden: torch.Tensor, masked_lm_positions: torch.Tensor) -> torch.Tensor:
    """[B, T, H] hidden states and [B, P] positions -> [B, P, H]: the masked tokens' only."""
    index = masked_lm_positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1))
    return torch.gather(hidden, 1, index)


def pretraining_loss(
    mlm_logits: torch.Tensor,
    mlm_targets: torch.Tensor,
    nsp_logits: torch.Tensor | None,
    nsp_labels: torch.Tensor,
) -> PretrainingOutput:
    """MLM loss averaged over labelled tokens, NSP loss over sequences, plus exact sums.

    Cross-entropy is taken in fp32 even under autocast. A batch without any masked
    token yields an MLM loss of 0 (sum 0 over a count clamped to 1), not NaN.
    ``nsp_logits=None`` (masked LM only): the NSP sums and count are 0, the loss is MLM's.
    """
    flat_logits = mlm_logits.reshape(-1, mlm_logits.size(-1)).float()
    flat_targets = mlm_targets.reshape(-1)
    labelled = flat_targets != IGNORE_INDEX
    mlm_count = labelled.sum()
    mlm_loss_sum = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX, reduction="sum")
    mlm_loss = mlm_loss_sum / mlm_count.clamp(min=1)
    mlm_correct = ((flat_logits.argmax(-1) == flat_targets) & labelled).sum()

    if nsp_logits is None:
        zero = mlm_loss_sum.new_zeros(())
        none = torch.zeros((), dtype=torch.long, device=mlm_logits.device)
        return PretrainingOutput(loss=mlm_loss, mlm_loss=mlm_loss, nsp_loss=zero,
                                 mlm_loss_sum=mlm_loss_sum, mlm_correct=mlm_correct, mlm_count=mlm_count,
                                 nsp_loss_sum=zero, nsp_correct=none, nsp_count=none)
    nsp_logits = nsp_logits.float()
    nsp_loss_sum = F.cross_entropy(nsp_logits, nsp_labels.reshape(-1), reduction="sum")
    # A fill on the device, not torch.tensor(n, device=...): no host-to-device copy per forward.
    nsp_count = torch.full((), nsp_labels.numel(), dtype=torch.long, device=nsp_logits.device)
    nsp_loss = nsp_loss_sum / nsp_count.clamp(min=1)
    nsp_correct = (nsp_logits.argmax(-1) == nsp_labels.reshape(-1)).sum()

    return PretrainingOutput(
        loss=mlm_loss + nsp_loss,
        mlm_loss=mlm_loss,
        nsp_loss=nsp_loss,
        mlm_loss_sum=mlm_loss_sum,
        mlm_correct=mlm_correct,
        mlm_count=mlm_count,
        nsp_loss_sum=nsp_loss_sum,
        nsp_correct=nsp_correct,
        nsp_count=nsp_count,
    )


def unwrap(model: nn.Module) -> BertForPreTraining:
    """The ``BertForPreTraining`` inside any DataParallel/DDP/compile/PretrainingModel wrapping.

    The original tutorial called ``model.module`` unconditionally, which fails as soon
    as the model is not wrapped; peeling wrappers by type works in every setup.
    """
    while True:
        if isinstance(model, BertForPreTraining):
            return model
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(model, PretrainingModel):
            model = model.bert
        else:
            raise TypeError(f"cannot find a BertForPreTraining inside {type(model).__name__}")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) inside the block, the model's previous mode restored after it,
    so that evaluation or a demonstration can run in the middle of training."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
