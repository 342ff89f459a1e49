"""The CUDA paths, run for real on a GPU (skipped without one): ``pytest -m cuda tests/test_gpu.py``.

``scripts/gpu_check.sh`` runs this file and the benchmarks on real-length data on a GPU machine. On CPU-only
machines (CI) every test here is skipped; their CPU equivalents are in tests/test_precision.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from compiled import accumulated_steps, micro_batches
from tiny import fit_killed_in_step, free_port, tiny_config

from bert_tutorial.core.model import PretrainingModel, build_model
from bert_tutorial.core.optim import build_optimizer, build_scheduler
from bert_tutorial.core.step import train_step
from bert_tutorial.pretrain.device import autocast_context, make_grad_scaler
from bert_tutorial.pretrain.metrics import read_metrics
from bert_tutorial.pretrain.speed import fused_clip_and_step, prepared_attention_mask
from bert_tutorial.pretrain.trainer import Trainer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.device("cuda", 0)


def gpu_config(tmp_path, **overrides):
    return tiny_config(tmp_path, device="cuda", **overrides)


def one_step_losses(cfg, batch, precision: str, compile_model: bool = False, steps: int = 1) -> list[float]:
    """Losses of ``steps`` train_step calls from the same initial weights in ``precision``."""
    torch.manual_seed(0)
    module = PretrainingModel(build_model(cfg, 50)).to(CUDA)
    model = torch.compile(module) if compile_model else module
    optimizer = build_optimizer(module, cfg, CUDA)
    scheduler = build_scheduler(optimizer, 100, 0)
    scaler = make_grad_scaler(CUDA, precision)
    out = []
    for _ in range(steps):
        result = train_step(model, [batch], optimizer, scheduler, device=CUDA,
                            autocast=autocast_context(CUDA, precision), scaler=scaler)
        out.append(float(result.losses.sum()))
    return out


@pytest.fixture
def cfg_and_batch(tmp_path):
    cfg = gpu_config(tmp_path, dropout=0.0)
    trainer_data = Trainer(cfg).train_data
    batch = next(iter(torch.utils.data.DataLoader(trainer_data, batch_size=8)))
    return cfg, batch


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_match_fp32(cfg_and_batch, precision):
    if precision == "bf16" and torch.cuda.get_device_capability(CUDA) < (8, 0):
        pytest.skip("no native bf16 on this GPU")
    cfg, batch = cfg_and_batch
    reference = one_step_losses(cfg, batch, "fp32", steps=3)
    mixed = one_step_losses(cfg, batch, precision, steps=3)
    assert mixed == pytest.approx(reference, rel=2e-2)


def test_torch_compile_matches_eager(cfg_and_batch):
    cfg, batch = cfg_and_batch
    assert one_step_losses(cfg, batch, "fp32", compile_model=True, steps=3) == pytest.approx(
        one_step_losses(cfg, batch, "fp32", steps=3), rel=1e-4)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


@pytest.mark.slow  # compiles: tens of seconds (-m "cuda and not slow" leaves it out)
def test_bf16_compile_with_accumulation_matches_eager(tmp_path):
    """bf16 autocast, compiled, 2 micro-batches per step: the eager step's losses and gradients.

    Both run in bf16, whose 8-bit mantissa (relative step 2^-8, about 0.4 %) the compiled
    kernels round at other places (fused elementwise ops keep fp32 in registers): losses
    within 1 %, each step's whole gradient within 5 % in norm, pointing the same way.
    """
    if torch.cuda.get_device_capability(CUDA) < (8, 0):
        pytest.skip("no native bf16 on this GPU")
    cfg = gpu_config(tmp_path, dropout=0.0)
    steps = micro_batches(cfg, steps=3, accum=2, size=8)
    eager = accumulated_steps(cfg, steps, CUDA, "bf16", compile_model=False)
    compiled = accumulated_steps(cfg, steps, CUDA, "bf16", compile_model=True)
    torch.testing.assert_close(compiled["losses"], eager["losses"], rtol=1e-2, atol=1e-3)
    for got, want in zip(compiled["grads"], eager["grads"], strict=True):
        assert relative_error(got, want) < 5e-2
        assert float(torch.nn.functional.cosine_similarity(got, want, dim=0)) > 0.998


@pytest.mark.parametrize("group", ["one process", "DDP group of one"])
def test_the_step_never_waits_for_the_gpu(cfg_and_batch, group, monkeypatch):
    """No host-device sync inside train_step (bf16/fp32 with fused AdamW), also under NCCL DDP.

    A DDP group of one process runs the DDP-only lines of the step (the token counts'
    all-reduce, the wrapped model) on a single GPU.
    """
    cfg, batch = cfg_and_batch
    precision = "bf16" if torch.cuda.get_device_capability(CUDA) >= (8, 0) else "fp32"
    torch.manual_seed(0)
    # The Trainer's GPU plug-ins: without them the step reads the mask and the gradient norm.
    module = PretrainingModel(build_model(cfg, 50), prepare_mask=prepared_attention_mask).to(CUDA)
    model: torch.nn.Module = module
    if group != "one process" and not torch.distributed.is_nccl_available():
        pytest.skip("this torch has no NCCL")
    try:
        if group != "one process":
            monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
            monkeypatch.setenv("MASTER_PORT", str(free_port()))
            torch.distributed.init_process_group("nccl", rank=0, world_size=1, device_id=CUDA)
            model = torch.nn.parallel.DistributedDataParallel(module, device_ids=[0])
        optimizer = build_optimizer(module, cfg, CUDA)  # fused on CUDA
        scheduler = build_scheduler(optimizer, 100, 0)
        batch = {k: v.pin_memory() for k, v in batch.items()}
        kwargs = dict(device=CUDA, autocast=autocast_context(CUDA, precision),
                      optimizer_step=fused_clip_and_step)
        # Warm-up: lazy initialisation may sync, and DDP rebuilds its gradient buckets (a sync,
        # once per run) at the forward after the first backward, hence two steps.
        for _ in range(2):
            train_step(model, [batch], optimizer, scheduler, **kwargs)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            result = train_step(model, [batch], optimizer, scheduler, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert isinstance(result.updated, torch.Tensor) and bool(result.updated)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()



def test_gpu_loaders_pin_memory(tmp_path):
    trainer = Trainer(gpu_config(tmp_path))
    assert trainer.train_loader.pin_memory and trainer.precision in ("bf16", "fp16")
    assert next(iter(trainer.train_loader))["input_ids"].is_pinned()


def test_resume_on_gpu_is_exact_enough(tmp_path, monkeypatch):
    Trainer(gpu_config(tmp_path / "a", epochs=2, save_every_steps=4)).fit()
    fit_killed_in_step(monkeypatch, gpu_config(tmp_path / "b", epochs=2, save_every_steps=4), 7)
    Trainer(gpu_config(tmp_path / "b", epochs=2, save_every_steps=4)).fit()
    a, b = ([r["mlm_loss"] for r in read_metrics(tmp_path / d / "run") if r["kind"] == "train"]
            for d in ("a", "b"))
    assert b == pytest.approx(a, rel=1e-4)  # GPU kernels may be non-deterministic


@pytest.mark.slow  # compiles: tens of seconds (-m "cuda and not slow" leaves it out)
def test_a_compiled_run_resumes_on_gpu_exactly_enough(tmp_path, monkeypatch):
    """``compile=None`` (``TrainConfig.full``'s) compiles on CUDA; killed and resumed, the same losses.

    bf16 with 2 micro-batches per step, as a full run; "exactly enough": GPU kernels
    (cuBLAS, inductor's reductions) need not add up in the same order twice.
    """
    overrides = dict(epochs=2, save_every_steps=4, grad_accum_steps=2, batch_size=4, compile=None)
    reference = Trainer(gpu_config(tmp_path / "a", **overrides))
    assert reference.compiled and reference.model is not reference.module
    reference.fit()
    fit_killed_in_step(monkeypatch, gpu_config(tmp_path / "b", **overrides), 7)
    resumed = Trainer(gpu_config(tmp_path / "b", **overrides))
    assert resumed.progress.step == 4 and resumed.compiled
    resumed.fit()
    a, b = ([r["mlm_loss"] for r in read_metrics(tmp_path / d / "run") if r["kind"] == "train"]
            for d in ("a", "b"))
    assert len(a) == 16 and b == pytest.approx(a, rel=1e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs 2 GPUs")
def test_nccl_ddp_matches_one_process(tmp_path):
    from bert_tutorial.pretrain.launch import config_args

    one = gpu_config(tmp_path / "one", batch_size=16, dropout=0.0)
    Trainer(one).fit()
    two = gpu_config(tmp_path / "two", batch_size=8, dropout=0.0)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "bert_tutorial.pretrain", *config_args(two)], cwd=ROOT, check=True, timeout=600)
    a, b = ([r["mlm_loss"] for r in read_metrics(tmp_path / d / "run") if r["kind"] == "train"]
            for d in ("one", "two"))
    assert b == pytest.approx(a, rel=1e-3)


def test_benchmark_smoke_run_on_the_gpu():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_step.py"), "--quick",
                          "--device", "cuda"], capture_output=True, text=True, timeout=600, check=True)
    assert "seq/s" in out.stdout


# --- the speed switches (tests/test_speed_switches.py checks each on a CPU) -------------------


def test_flash_varlen_attention_equals_attention_within_each_sequence():
    """The CUDA kernel ``--unpad`` uses, against the padded SDPA path, on a real packed batch."""
    from test_speed_switches import sample_batch

    from bert_tutorial.pretrain import fast_encoder

    if not fast_encoder.VARLEN_AVAILABLE:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    batch = fast_encoder.pack_batch(sample_batch())
    rows, length = batch["input_ids"].shape
    n, heads, width = len(batch["token_index"]), 12, 64
    q, k, v = torch.randn(3, n, heads * width, device=CUDA, dtype=torch.bfloat16)
    index, starts = batch["token_index"].to(CUDA), batch["cu_seqlens"].to(CUDA)
    keep = batch["attention_mask"].bool().to(CUDA)[:, None, None, :]
    scale = width ** -0.5
    want = fast_encoder._repadded_attention(q, k, v, heads, index, rows, length, keep, 0.0, scale)
    longest = max(length, fast_encoder.packing_bucket(rows, length))
    got = fast_encoder._varlen_attn(*(t.unflatten(-1, (heads, -1)) for t in (q, k, v)), starts, starts,
                                    longest, longest, scale=scale).flatten(-2)
    real = int(batch["cu_seqlens"][rows])
    torch.testing.assert_close(got[:real].float(), want[:real].float(), rtol=2e-2, atol=2e-2)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("switches", [dict(fused_qkv=True), dict(unpad=True),
                                      dict(fused_qkv=True, unpad=True, half_precision_layernorm=True,
                                           fold_clipping=True)],
                         ids=["fused-qkv", "unpad", "all"])
def test_speed_switches_in_bf16_match_the_stock_step(tmp_path, switches):
    """bf16, 3 steps of 2 micro-batches: the switches' losses and gradients against the stock
    step's (bf16 rounds at other places: losses within 1 %, gradients pointing the same way)."""
    if torch.cuda.get_device_capability(CUDA) < (8, 0):
        pytest.skip("no native bf16 on this GPU")
    cfg = gpu_config(tmp_path, dropout=0.0, attention_dropout=0.0)
    steps = micro_batches(cfg, steps=3, accum=2, size=8)
    stock = accumulated_steps(cfg, steps, CUDA, "bf16", compile_model=False)
    fast = accumulated_steps(cfg, steps, CUDA, "bf16", compile_model=False, **switches)
    torch.testing.assert_close(fast["losses"], stock["losses"], rtol=1e-2, atol=1e-3)
    for got, want in zip(fast["grads"], stock["grads"], strict=True):
        assert float(torch.nn.functional.cosine_similarity(got, want, dim=0)) > 0.998


@pytest.mark.slow  # compiles: tens of seconds (-m "cuda and not slow" leaves it out)
def test_cuda_graphs_with_accumulation_match_eager(tmp_path):
    """``--compile-mode reduce-overhead`` (CUDA graphs) with 2 micro-batches per step and
    every speed switch: a Trainer run's losses equal the eager run's within bf16 rounding,
    and the graphs were replayed (the marks ran, one per micro-batch)."""
    common = dict(dropout=0.0, attention_dropout=0.0, epochs=1, grad_accum_steps=2, batch_size=4)
    Trainer(gpu_config(tmp_path / "eager", **common)).fit()
    fast = Trainer(gpu_config(tmp_path / "graphs", **common, compile=True, compile_mode="reduce-overhead",
                              fused_qkv=True, unpad=True, fold_clipping=True))
    assert fast._before_forward is torch.compiler.cudagraph_mark_step_begin
    fast.fit()
    a, b = ([r["mlm_loss"] for r in read_metrics(tmp_path / d / "run") if r["kind"] == "train"]
            for d in ("eager", "graphs"))
    assert len(a) == 8 and b == pytest.approx(a, rel=1e-2)
