"""AdamW parameter groups and the warmup/decay schedule."""

from __future__ import annotations

import pytest
import torch

from bert_tutorial.config import TrainConfig
from bert_tutorial.core.model import build_model
from bert_tutorial.core.optim import (
    build_optimizer,
    build_scheduler,
    linear_warmup_decay,
    lr_schedule,
    parameter_groups,
    warmup_steps,
)

SMALL = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def test_no_weight_decay_on_bias_and_layernorm():
    model = build_model(TrainConfig(**SMALL), vocab_size=50)
    decay, no_decay = parameter_groups(model, weight_decay=0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
    assert all(not n.endswith("bias") and "LayerNorm" not in n for n in decayed)
    assert "bert.encoder.layer.0.attention.self.query.weight" in decayed
    assert "bert.embeddings.LayerNorm.weight" in exempt
    assert "bert.encoder.layer.0.output.dense.bias" in exempt
    assert len(decayed) + len(exempt) == len(list(model.parameters()))


def test_optimizer_is_torch_adamw_with_config_values():
    model = build_model(TrainConfig(**SMALL), vocab_size=50)
    opt = build_optimizer(model, TrainConfig(learning_rate=2e-4), torch.device("cpu"))
    assert type(opt) is torch.optim.AdamW
    assert opt.param_groups[0]["lr"] == 2e-4
    assert not opt.defaults.get("fused")  # the fused kernel is CUDA-only


def test_warmup_is_a_whole_number_of_steps():
    assert warmup_steps(1000, 0.1) == 100
    assert warmup_steps(25, 0.1) == 3  # rounded up, an int: no float steps
    assert isinstance(warmup_steps(7, 0.33), int)
    with pytest.raises(ValueError):
        warmup_steps(10, 1.5)


def test_schedule_warms_up_then_decays_to_zero():
    lrs = lr_schedule(TrainConfig(learning_rate=1e-3, warmup_fraction=0.1), total_steps=100)
    assert lrs[0] == pytest.approx(1e-4)  # the first step already learns
    assert lrs[9] == pytest.approx(1e-3) and max(lrs) == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(1e-3 / 90)  # last of 90 decay steps
    assert linear_warmup_decay(100, 100, 10) == 0.0


def test_scheduler_follows_the_plotted_schedule():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-3)
    sched = build_scheduler(opt, total_steps=20, warmup=4)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = lr_schedule(TrainConfig(learning_rate=1e-3, warmup_fraction=0.2), total_steps=20)
    assert seen == pytest.approx(expected)


def test_default_learning_rate_depends_on_the_kind_of_run():
    assert TrainConfig().lr == 1e-3  # small model from scratch
    assert TrainConfig(model_name_or_path="bert-base-uncased").lr == 1e-4  # continued pre-training
    assert TrainConfig(model_name_or_path="x", learning_rate=3e-5).lr == 3e-5
