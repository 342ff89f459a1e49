"""``torch.compile`` on a CPU: the compiled step equals the eager one, and a compiled run resumes exactly.

TorchInductor compiles for the CPU too (it needs a C++ compiler; without one these tests
skip, saying so). Compiling takes tens of seconds on a 2-core CPU, hence ``slow``. The same
checks in bf16 on a GPU are in tests/test_gpu.py.
"""

from __future__ import annotations

import pytest
import torch
from compiled import accumulated_steps, micro_batches, skip_without_inductor
from tiny import fit_killed_in_step, tiny_config

from bert_tutorial.pretrain.metrics import read_metrics
from bert_tutorial.pretrain.trainer import Trainer

CPU = torch.device("cpu")
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles anew: no graph (or dynamic-shape decision) left by another test."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_step_with_accumulation_equals_eager_in_fp32(tmp_path):
    """Two optimizer steps of 2 micro-batches: losses, gradients and weights within 1e-5."""
    skip_without_inductor()
    cfg = tiny_config(tmp_path, dropout=0.0)
    steps = micro_batches(cfg, steps=2, accum=2, size=4)
    eager = accumulated_steps(cfg, steps, CPU, "fp32", compile_model=False)
    compiled = accumulated_steps(cfg, steps, CPU, "fp32", compile_model=True)
    torch.testing.assert_close(compiled["losses"], eager["losses"], rtol=1e-5, atol=1e-5)
    assert len(compiled["grads"]) == len(eager["grads"]) == 2
    for got, want in zip(compiled["grads"], eager["grads"], strict=True):
        assert want.abs().max() > 0  # a real gradient, not zeros on both sides
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for name, want in eager["weights"].items():
        torch.testing.assert_close(compiled["weights"][name], want, rtol=1e-5, atol=1e-5)


def train_losses(run_dir) -> list[tuple[int, float, float]]:
    return [(r["step"], r["mlm_loss"], r["nsp_loss"]) for r in read_metrics(run_dir)
            if r["kind"] == "train"]


@pytest.fixture
def one_thread():
    """Run on one CPU thread, where compiled CPU training is deterministic.

    With two threads two uninterrupted compiled runs already differed in the last bit of
    some losses (steps 8, 12 and 16 of this run; eager runs never did): some of inductor's
    CPU kernels sum across threads in an order that changes from run to run. Exactness
    can only be asked of one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_compiled_run_resumes_exactly(tmp_path, monkeypatch, one_thread):
    """Killed in step 4 and run again: the same losses, to the bit, as the uninterrupted run.

    Dropout stays on (0.1): the compiled dropout's random numbers come from torch's
    generator, which the checkpoint restores.
    """
    skip_without_inductor()
    overrides = dict(epochs=2, save_every_steps=2, grad_accum_steps=2, batch_size=4, compile=True,
                     eval_data=None)
    reference = Trainer(tiny_config(tmp_path / "a", **overrides))
    assert reference.compiled and reference.model is not reference.module
    reference.fit()
    fit_killed_in_step(monkeypatch, tiny_config(tmp_path / "b", **overrides), 4)
    resumed = Trainer(tiny_config(tmp_path / "b", **overrides))
    assert resumed.progress.step == 2
    resumed.fit()
    a, b = train_losses(tmp_path / "a" / "run"), train_losses(tmp_path / "b" / "run")
    assert len(a) == 16 and b == a


def test_compiled_speed_switches_equal_the_eager_stock_step_in_fp32(tmp_path):
    """Fused QKV and unpadding compiled (packed lengths vary by batch: a few shapes), two steps
    of 2 micro-batches: the eager stock step's losses, gradients and weights within 1e-5."""
    skip_without_inductor()
    cfg = tiny_config(tmp_path, dropout=0.0)
    steps = micro_batches(cfg, steps=2, accum=2, size=4)
    eager = accumulated_steps(cfg, steps, CPU, "fp32", compile_model=False)
    fast = accumulated_steps(cfg, steps, CPU, "fp32", compile_model=True, fused_qkv=True, unpad=True)
    torch.testing.assert_close(fast["losses"], eager["losses"], rtol=1e-5, atol=1e-5)
    for got, want in zip(fast["grads"], eager["grads"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for name, want in eager["weights"].items():
        torch.testing.assert_close(fast["weights"][name], want, rtol=1e-5, atol=1e-5)
