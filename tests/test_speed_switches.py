"""The GPU speed switches, checked on a CPU: each computes the step the stock path computes.

``--fused-qkv`` and ``--unpad`` (pretrain/fast_encoder.py), ``--half-precision-layernorm``,
``--fold-clipping`` (pretrain/speed.py) and ``--compile-mode`` (CUDA graphs). In fp32 with
dropout 0, losses and gradients equal the stock ``BertModel``'s within 1e-5, on the sample
model and a real batch of ``data_samples/train``; parameter names and
checkpoints do not change. The CUDA kernels themselves are in tests/test_gpu.py.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
from tiny import tiny_config
from transformers import BertForPreTraining

from bert_tutorial.config import DATA_SAMPLES, ConfigError, TrainConfig
from bert_tutorial.core.data import PretrainingDataset
from bert_tutorial.core.model import PretrainingModel, load_pretrained, set_attention_dropout
from bert_tutorial.core.optim import build_optimizer, build_scheduler
from bert_tutorial.core.step import clip_and_step, train_step
from bert_tutorial.pretrain import fast_encoder, speed
from bert_tutorial.pretrain.fast_encoder import FastEncoder, PackingCollate, pack_batch
from bert_tutorial.pretrain.metrics import read_metrics
from bert_tutorial.pretrain.speed import fused_clip_and_step
from bert_tutorial.pretrain.trainer import Trainer

BASE_MODEL = DATA_SAMPLES / "base-model"
SWITCHES = [pytest.param(True, False, id="fused-qkv"), pytest.param(False, True, id="unpad"),
            pytest.param(True, True, id="both")]


@functools.cache
def sample_batch(size: int = 16) -> dict[str, torch.Tensor]:
    """The first ``size`` sequences of data_samples/train, collated as the loader does."""
    data = PretrainingDataset(DATA_SAMPLES / "train", vocab_size=30522)
    return torch.utils.data.default_collate([data[i] for i in range(size)])


def base_model(dropout: float = 0.0) -> BertForPreTraining:
    bert = load_pretrained(str(BASE_MODEL))
    for module in bert.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = dropout
    return bert


def loss_and_grads(model: PretrainingModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("fused_qkv", "unpad"), SWITCHES)
def test_the_fast_encoder_computes_the_stock_loss_and_gradients(fused_qkv, unpad):
    batch = sample_batch()
    assert 0.02 < 1 - batch["attention_mask"].float().mean() < 0.5  # real padding to remove (5 %)
    bert = base_model()
    want_loss, want = loss_and_grads(PretrainingModel(bert), batch)
    fast = PretrainingModel(bert, encoder=FastEncoder(fused_qkv=fused_qkv, unpad=unpad))
    got_loss, got = loss_and_grads(fast, pack_batch(batch) if unpad else batch)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    assert got.keys() == want.keys() and len(want) == len(list(bert.parameters()))
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5, msg=name)


def test_packing_indices_on_a_real_batch():
    batch = sample_batch()
    packed = pack_batch(batch)
    mask = batch["attention_mask"].bool()
    rows, length = mask.shape
    real = int(mask.sum())
    index, starts = packed["token_index"], packed["cu_seqlens"]
    bucket = fast_encoder.packing_bucket(rows, length)
    assert len(index) % bucket == 0 and real <= len(index) < real + bucket
    assert starts.dtype == torch.int32 and len(starts) == rows + 1 + math.ceil(bucket / length)
    assert starts[rows] == real and starts[-1] == len(index)
    # The padding slots: "sequences" of at most T tokens, so the longest one is a real one.
    assert (starts.diff() >= 0).all() and (starts.diff() <= length).all()
    # Each packed token is its own row's token, in order; the padding slots point past the batch.
    flat_ids = torch.cat([batch["input_ids"].flatten(), torch.tensor([-1])])
    for b in range(rows):
        row = flat_ids[index[starts[b]:starts[b + 1]]]
        assert torch.equal(row, batch["input_ids"][b][mask[b]])
    assert (index[real:] == rows * length).all()
    # Masked positions land on the masked tokens; a [CLS] starts each sequence.
    want = batch["input_ids"].gather(1, batch["masked_lm_positions"])
    assert torch.equal(flat_ids[index[packed["packed_positions"]]], want)
    assert (flat_ids[index[starts[:rows].long()]] == 101).all()  # [CLS] in bert-base-uncased's vocabulary


def segment_attention(q, k, v, heads, starts, scale):
    """Attention within each ``cu_seqlens`` segment, one SDPA per segment: what the kernel does."""
    out = torch.empty_like(q)
    for a, b in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
        if b > a:
            seg = [t[a:b].unflatten(-1, (heads, -1)).transpose(0, 1) for t in (q, k, v)]
            out[a:b] = torch.nn.functional.scaled_dot_product_attention(*seg, scale=scale).transpose(0, 1).flatten(-2)
    return out


@pytest.mark.parametrize(("rows", "length", "lengths"), [(256, 128, [1] * 256), (4, 512, [512, 3, 300, 40]),
                                                    (3, 16, [16, 16, 16])])
def test_packing_cuts_the_padding_into_sequences_of_at_most_t(rows, length, lengths):
    """The extreme batches: nearly all padding (the padding slots then span several pieces),
    ragged lengths, and none at all (an empty padding piece)."""
    mask = torch.zeros(rows, length, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    batch = {"attention_mask": mask, "masked_lm_positions": torch.zeros(rows, 2, dtype=torch.long)}
    packed = pack_batch(batch)
    starts, total = packed["cu_seqlens"], len(packed["token_index"])
    assert starts[rows] == sum(lengths) and starts[-1] == total
    assert (starts.diff() >= 0).all() and int(starts.diff().max()) <= length
    assert len(starts) == rows + 1 + math.ceil(fast_encoder.packing_bucket(rows, length) / length)


def test_packed_attention_equals_attention_within_each_sequence():
    """The CPU path (back to padded rows for attention) equals flash's varlen semantics."""
    batch = pack_batch(sample_batch())
    rows, length = batch["input_ids"].shape
    n, heads, width = len(batch["token_index"]), 4, 32
    q, k, v = torch.randn(3, n, heads * width, generator=torch.Generator().manual_seed(0))
    keep = batch["attention_mask"].bool()[:, None, None, :]
    got = fast_encoder._repadded_attention(q, k, v, heads, batch["token_index"], rows, length, keep,
                                           0.0, width ** -0.5)
    want = segment_attention(q, k, v, heads, batch["cu_seqlens"], width ** -0.5)
    real = int(batch["cu_seqlens"][rows])
    torch.testing.assert_close(got[:real], want[:real], rtol=1e-5, atol=1e-6)
    assert torch.isfinite(got).all()


def test_unpad_without_packed_batches_is_named():
    with pytest.raises(ValueError, match="pack_batch .PackingCollate.; missing token_index"):
        PretrainingModel(base_model(), encoder=FastEncoder(unpad=True))(**sample_batch(4))
    with pytest.raises(ValueError, match="needs sparse_mlm_head=True"):
        PretrainingModel(base_model(), sparse_mlm_head=False, encoder=FastEncoder(fused_qkv=True))
    with pytest.raises(TypeError, match="unexpected batch key.s. cu_seqlens"):
        PretrainingModel(base_model())(**pack_batch(sample_batch(4)))


def test_half_precision_layernorm_casts_under_autocast_only():
    bert = base_model()
    handles = fast_encoder.half_precision_layernorm(bert)
    assert len(handles) == 2 * 2 + 1 + 1  # two per layer, the embeddings', the MLM head's
    ln = bert.bert.embeddings.LayerNorm
    x = torch.randn(2, 3, 128)
    assert ln(x).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ln(x)
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, torch.nn.functional.layer_norm(x, (128,), ln.weight, ln.bias, ln.eps).bfloat16())
        loss = PretrainingModel(bert)(**sample_batch(4)).loss
    assert torch.isfinite(loss)
    plain = base_model()
    batch = sample_batch(4)
    assert torch.equal(PretrainingModel(bert)(**batch).loss, PretrainingModel(plain)(**batch).loss)  # fp32
    for handle in handles:
        handle.remove()


def three_clipped_steps(fold: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Three steps of a fused AdamW (CPU) with clipping active, folded into the kernel or not."""
    torch.manual_seed(0)
    bert = base_model()
    module = PretrainingModel(bert)
    cfg = TrainConfig(fused_adamw=True, learning_rate=1e-3)
    optimizer = build_optimizer(module, cfg, torch.device("cpu"))
    assert optimizer.defaults["fused"]
    scheduler = build_scheduler(optimizer, 10, 0)
    norms = []
    data = PretrainingDataset(DATA_SAMPLES / "train", vocab_size=30522)
    for step in range(3):
        batch = torch.utils.data.default_collate([data[i] for i in range(8 * step, 8 * step + 8)])
        result = train_step(module, [batch], optimizer, scheduler, device=torch.device("cpu"),
                            max_grad_norm=0.5,
                            optimizer_step=functools.partial(fused_clip_and_step, fold_clipping=fold))
        assert result.updated.dtype == torch.bool and bool(result.updated)
        norms.append(result.grad_norm)
    return norms, {k: v.clone() for k, v in bert.state_dict().items()}


def test_clipping_folded_into_fused_adamw_gives_the_same_update():
    want_norms, want = three_clipped_steps(fold=False)
    got_norms, got = three_clipped_steps(fold=True)
    assert all(n > 0.5 for n in want_norms)  # the clipping was active at every step
    torch.testing.assert_close(torch.stack(got_norms), torch.stack(want_norms), rtol=1e-5, atol=0)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


def test_folded_clipping_skips_a_non_finite_step():
    module = PretrainingModel(base_model())
    optimizer = build_optimizer(module, TrainConfig(fused_adamw=True), torch.device("cpu"))
    with torch.no_grad():  # an infinite row of the embedding table (tied to the MLM decoder)
        module.bert.bert.embeddings.word_embeddings.weight[1996].fill_(float("inf"))  # "the"
    before = {k: v.clone() for k, v in module.state_dict().items()}
    batch = sample_batch(4)
    batch["input_ids"][:, 1] = 1996
    result = train_step(module, [batch], optimizer, build_scheduler(optimizer, 10, 0),
                        device=torch.device("cpu"),
                        optimizer_step=functools.partial(fused_clip_and_step, fold_clipping=True))
    assert not bool(result.updated) and not math.isfinite(float(result.grad_norm))
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert not hasattr(optimizer, "grad_scale")  # the protocol attributes are cleaned up


def test_before_forward_runs_once_per_micro_batch():
    """Where the Trainer marks a CUDA-graph step: before each micro-batch's forward."""
    module = PretrainingModel(base_model())
    optimizer = build_optimizer(module, TrainConfig(), torch.device("cpu"))
    calls = []
    real_forward = module.forward
    module.forward = lambda **batch: (calls.append("forward"), real_forward(**batch))[1]
    train_step(module, [sample_batch(4)] * 3, optimizer, build_scheduler(optimizer, 10, 0),
               device=torch.device("cpu"), optimizer_step=clip_and_step,
               before_forward=lambda: calls.append("mark"))
    assert calls == ["mark", "forward"] * 3


def test_gradient_buffers_kept_for_cuda_graphs_give_the_same_steps():
    """``keep_grads_outside_cuda_graphs`` + ``keep_grad_buffers=True`` (what CUDA graphs need):
    the same losses and weights as freeing the gradients, which stay allocated and zero."""
    def two_steps(keep: bool) -> tuple[list[float], dict[str, torch.Tensor], PretrainingModel]:
        torch.manual_seed(0)
        module = PretrainingModel(base_model())
        if keep:
            speed.keep_grads_outside_cuda_graphs(module)
        optimizer = build_optimizer(module, TrainConfig(), torch.device("cpu"))
        scheduler = build_scheduler(optimizer, 10, 0)
        losses = [float(train_step(module, [sample_batch(4), sample_batch(8)], optimizer, scheduler,
                                   device=torch.device("cpu"), keep_grad_buffers=keep).losses.sum())
                  for _ in range(2)]
        return losses, {k: v.clone() for k, v in module.state_dict().items()}, module

    want_losses, want, _ = two_steps(keep=False)
    got_losses, got, module = two_steps(keep=True)
    assert got_losses == want_losses
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert all(p.grad is not None and not p.grad.any() for p in module.parameters())


def test_unpad_on_a_gpu_says_when_it_cannot_use_the_varlen_kernel(monkeypatch):
    bert = base_model()
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(speed, "VARLEN_AVAILABLE", False)
    with pytest.warns(UserWarning, match="has no torch.nn.attention.varlen"):
        speed._warn_without_varlen(bert, cuda, "bf16", varlen=False)
    monkeypatch.setattr(speed, "VARLEN_AVAILABLE", True)
    with pytest.warns(UserWarning, match="needs bf16 or fp16, and this run is fp32"):
        speed._warn_without_varlen(bert, cuda, "fp32", varlen=True)
    set_attention_dropout(bert, 0.1)
    with pytest.warns(UserWarning, match="no attention dropout, and the model's is 0.1: add --attention-dropout 0"):
        speed._warn_without_varlen(bert, cuda, "bf16", varlen=True)
    set_attention_dropout(bert, 0.0)
    speed._warn_without_varlen(bert, cuda, "bf16", varlen=True)  # the kernel runs: no warning
    assert not fast_encoder.varlen_supported(torch.device("cpu"))


def test_models_the_hand_run_encoder_cannot_run_are_refused():
    bert = base_model()
    bert.config.position_embedding_type = "relative_key"
    with pytest.raises(ConfigError, match="position_embedding_type 'relative_key'"):
        speed.speed_module(bert, TrainConfig(unpad=True), torch.device("cpu"))


def test_the_switches_are_checked_and_named(tmp_path):
    problems = {
        "--compile-mode (compile_mode) reduce-overhead needs --compile": dict(compile_mode="reduce-overhead"),
        "--fold-clipping (fold_clipping) clips inside the fused AdamW kernel: it cannot go with "
        "--no-fused-adamw": dict(fold_clipping=True, fused_adamw=False),
        "--unpad (unpad) needs --sparse-mlm-head": dict(unpad=True, sparse_mlm_head=False),
        "--fused-qkv (fused_qkv) must be True or False, got 'yes'": dict(fused_qkv="yes"),
        "--attention-dropout (attention_dropout) must be in [0, 1)": dict(attention_dropout=1.0),
        "--fused-qkv (fused_qkv) runs its own attention (SDPA, or flash's varlen kernel): it cannot "
        "go with --attn-implementation eager": dict(fused_qkv=True, attn_implementation="eager"),
    }
    for message, values in problems.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                           .replace("[", r"\[")):
            TrainConfig(**values).validate()
    TrainConfig(compile=None, compile_mode="reduce-overhead").validate()  # compiled on CUDA
    with pytest.raises(ConfigError, match="--fold-clipping .* does not use on cpu: add --fused-adamw"):
        Trainer(tiny_config(tmp_path, fold_clipping=True))
    assert not (tmp_path / "run").exists()  # refused before anything was written


def train_records(run_dir) -> list[float]:
    """The MLM and NSP losses of every train and eval record, in order."""
    return [r[key] for r in read_metrics(run_dir) if r["kind"] in ("train", "eval")
            for key in ("mlm_loss", "nsp_loss")]


def test_a_run_with_every_switch_matches_the_stock_run(tmp_path):
    """Trainer runs with every switch (loader workers packing the batches) and without: the
    same losses at every step and evaluation, and checkpoints with the same keys that load
    as BertForPreTraining."""
    common = dict(dropout=0.0, attention_dropout=0.0, epochs=2)
    stock = Trainer(tiny_config(tmp_path / "stock", **common))
    stock.fit()
    fast = Trainer(tiny_config(tmp_path / "fast", **common, fused_qkv=True, unpad=True,
                               half_precision_layernorm=True, fold_clipping=True, fused_adamw=True,
                               num_workers=1))
    assert isinstance(fast.train_loader.collate_fn, PackingCollate)
    assert fast.module.encoder.unpad and fast.module.encoder.fused_qkv
    fast.fit()
    want, got = train_records(tmp_path / "stock" / "run"), train_records(tmp_path / "fast" / "run")
    assert len(got) == len(want) > 20
    assert got == pytest.approx(want, rel=1e-4)
    assert fast.module.bert.state_dict().keys() == stock.module.bert.state_dict().keys()
    saved = sorted((tmp_path / "fast" / "run" / "checkpoints").iterdir())[-1]
    loaded = BertForPreTraining.from_pretrained(saved).eval()
    trained = fast.module.bert.eval()
    batch = next(iter(torch.utils.data.DataLoader(fast.train_data, batch_size=8)))
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).prediction_logits, trained(**inputs).prediction_logits)
    assert json.loads((saved / "config.json").read_text())["attention_probs_dropout_prob"] == 0.0


def test_unpad_keeps_attention_dropout_on_the_cpu_path(tmp_path):
    """With attention dropout (BERT's 0.1), --unpad takes the padded-attention path: it trains."""
    trainer = Trainer(tiny_config(tmp_path, unpad=True, epochs=1))
    attention = trainer.module.bert.bert.encoder.layer[0].attention.self
    assert attention.dropout.p == 0.1
    result = trainer.fit()
    assert math.isfinite(result.final_eval["mlm_loss"])
