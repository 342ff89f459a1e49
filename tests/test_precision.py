"""Precision and device choices, fp16 with loss scaling, and resuming on other hardware (CPU-run).

Every GPU-specific decision here is tested with the GPU faked (compute capability) or with
its CPU equivalent (fp16 autocast and GradScaler run on a CPU too); tests/test_gpu.py runs
the real thing where a GPU exists.
"""

from __future__ import annotations

import pytest
import torch
from tiny import fit_killed_in_step, tiny_config

from bert_tutorial.config import TrainConfig
from bert_tutorial.core.step import train_step
from bert_tutorial.pretrain import checkpoint as ckpt
from bert_tutorial.pretrain.device import load_scaler_state, make_grad_scaler, resolve_precision
from bert_tutorial.pretrain.metrics import read_metrics
from bert_tutorial.pretrain.speed import fused_clip_and_step
from bert_tutorial.pretrain.trainer import Trainer


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "fp16"), ((7, 0), "fp16"),
                                                      ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_uses_bf16_only_where_it_is_native(monkeypatch, capability, expected):
    """T4 (7.5) and V100 (7.0) emulate bf16: "auto" must mean fp16 + GradScaler there."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", torch.device("cuda", 0)) == expected
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cuda", 0)) == "bf16"  # asked for: honoured
    with pytest.raises(ValueError, match="--precision must be one of"):
        resolve_precision("half", torch.device("cpu"))


def poisoned_step(tmp_path, **overrides):
    """A Trainer and a batch whose gradient is infinite (an inf embedding row it uses)."""
    trainer = Trainer(tiny_config(tmp_path, epochs=1, **overrides))
    batch = next(iter(torch.utils.data.DataLoader(trainer.train_data, batch_size=8)))
    batch["input_ids"][:] = 5
    with torch.no_grad():
        trainer.module.bert.bert.embeddings.word_embeddings.weight[5].fill_(float("inf"))
    return trainer, batch


def test_fp16_overflow_is_skipped_and_halves_the_scale(tmp_path):
    trainer, batch = poisoned_step(tmp_path, precision="fp16")
    assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() == 65536.0
    before = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    result = train_step(trainer.model, [batch], trainer.optimizer, trainer.scheduler, device=trainer.device,
                        autocast=trainer.autocast, scaler=trainer.scaler)
    assert result.updated is False and result.loss_scale == 65536.0
    assert trainer.scaler.get_scale() == 32768.0  # GradScaler backs off, as on a GPU
    assert all(torch.equal(before[k], v) for k, v in trainer.module.state_dict().items())


def test_fused_adamw_skips_a_non_finite_step_on_the_device(tmp_path):
    trainer, batch = poisoned_step(tmp_path, fused_adamw=True)
    assert trainer.optimizer.defaults["fused"]
    before = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    result = train_step(trainer.model, [batch], trainer.optimizer, trainer.scheduler, device=trainer.device,
                        optimizer_step=fused_clip_and_step)
    assert isinstance(result.updated, torch.Tensor) and not result.updated  # no host sync needed
    assert all(torch.equal(before[k], v) for k, v in trainer.module.state_dict().items())
    assert not hasattr(trainer.optimizer, "found_inf")  # the protocol attributes are cleaned up


def test_fused_adamw_updates_a_finite_step(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, epochs=1, fused_adamw=True))
    batch = next(iter(torch.utils.data.DataLoader(trainer.train_data, batch_size=8)))
    before = trainer.module.bert.cls.predictions.transform.dense.weight.clone()
    result = train_step(trainer.model, [batch], trainer.optimizer, trainer.scheduler, device=trainer.device,
                        optimizer_step=fused_clip_and_step)
    assert isinstance(result.updated, torch.Tensor) and bool(result.updated)
    assert not torch.equal(before, trainer.module.bert.cls.predictions.transform.dense.weight)


def test_fp16_training_on_cpu_tracks_fp32(tmp_path):
    runs = {}
    for precision in ("fp32", "fp16"):
        Trainer(tiny_config(tmp_path / precision, epochs=1, precision=precision)).fit()
        runs[precision] = [r for r in read_metrics(tmp_path / precision / "run") if r["kind"] == "train"]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in runs["fp16"])
    assert runs["fp16"][0]["mlm_loss"] == pytest.approx(runs["fp32"][0]["mlm_loss"], rel=1e-2)
    state = ckpt.load_training_state(ckpt.latest_checkpoint(tmp_path / "fp16" / "run"))
    assert state["scaler"]["scale"] > 0  # the scaler ran and is saved for a resume


@pytest.mark.slow
@pytest.mark.parametrize(("first", "then"), [("fp32", "fp16"), ("fp16", "fp32"), ("bf16", "fp16")])
def test_resume_across_precisions(tmp_path, monkeypatch, first, then):
    """A run may resume on other hardware (CPU fp32 -> T4 fp16): a disabled scaler saved {}."""
    fit_killed_in_step(monkeypatch, tiny_config(tmp_path, epochs=2, save_every_steps=4, precision=first), 7)
    resumed = Trainer(tiny_config(tmp_path, epochs=2, save_every_steps=4, precision=then))
    assert resumed.progress.step == 4 and resumed.precision == then
    assert resumed.fit().steps == 16


def test_scaler_state_loads_only_into_an_enabled_scaler():
    cpu = torch.device("cpu")
    fp16 = make_grad_scaler(cpu, "fp16")
    load_scaler_state(fp16, {})  # from an fp32/bf16 checkpoint: a fresh scale search
    assert fp16.get_scale() == 65536.0
    load_scaler_state(fp16, {**fp16.state_dict(), "scale": 128.0})
    assert fp16.get_scale() == 128.0
    disabled = make_grad_scaler(cpu, "fp32")
    load_scaler_state(disabled, fp16.state_dict())  # an fp16 checkpoint resumed in fp32
    assert not disabled.is_enabled()


def test_rng_state_holds_only_this_process_device_and_restores_anywhere():
    cpu = torch.device("cpu")
    assert set(ckpt.rng_state(cpu)) == {"torch"}
    torch.manual_seed(3)
    # An older checkpoint from a 2-GPU machine: every GPU's state as a list. On a CPU (or a
    # machine with fewer GPUs) only what applies is restored; nothing indexes past the GPUs.
    state = {**ckpt.rng_state(cpu), "cuda": [torch.zeros(16, dtype=torch.uint8)] * 2}
    expected = torch.rand(3)
    torch.manual_seed(99)
    ckpt.set_rng_state(state, cpu)
    assert torch.equal(torch.rand(3), expected)


def test_cpu_training_never_pins_memory_even_with_a_gpu_present(tmp_path, monkeypatch):
    """CPU ranks on a GPU machine (notebook 04 on a 1-GPU runtime) must not touch cuda:0."""
    trainer = Trainer(tiny_config(tmp_path, epochs=1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert trainer.train_loader.pin_memory is False and trainer.eval_loader.pin_memory is False
    assert trainer.eval_loader.sampler.even is False  # evaluation covers every sequence


def test_full_config_does_not_ask_for_more_workers_than_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)  # Colab's 2 vCPUs
    assert TrainConfig.full().num_workers == 1
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert TrainConfig.full().num_workers == 4
