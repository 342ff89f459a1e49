"""The training loop: learning, checkpoints, exact resume, refusing to mix runs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny_config
from transformers import BertForPreTraining

from bert_tutorial.core.evaluation import frequency_baseline
from bert_tutorial.core.step import train_step
from bert_tutorial.pretrain import checkpoint as ckpt
from bert_tutorial.pretrain import trainer as training
from bert_tutorial.pretrain.metrics import read_metrics
from bert_tutorial.pretrain.trainer import Trainer


def train_losses(run_dir) -> list[tuple[int, float, float]]:
    return [(r["step"], r["mlm_loss"], r["nsp_loss"]) for r in read_metrics(run_dir) if r["kind"] == "train"]


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(ckpt.latest_checkpoint(run_dir) / "model.safetensors")


@pytest.mark.slow
def test_fit_writes_metrics_checkpoints_and_plots(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2, plots=True)
    result = Trainer(cfg).fit()
    run = tmp_path / "run"
    records = read_metrics(run)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert result.steps == 16 and [r["step"] for r in train] == list(range(1, 17))  # 64 / 8 per epoch
    assert {"step", "lr", "mlm_loss", "nsp_loss", "loss", "seq_per_s"} <= set(train[0])
    assert [e["step"] for e in evals] == [0, 8, 16]  # a baseline, then every epoch end
    assert result.final_eval == evals[-1] and result.eval_history == evals
    assert (run / "loss_curves.png").stat().st_size > 0
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["checkpoint-00000008", "checkpoint-00000016"]
    assert json.loads((run / "train_config.json").read_text())["seed"] == 0
    [reference] = [r for r in records if r["kind"] == "reference"]  # written once, for the plots
    assert reference["vocab_size"] == 50 and 0 <= reference["most_frequent_accuracy"] < 1
    baseline = frequency_baseline(cfg.train_data, cfg.eval_data, 50)
    assert reference["unigram_mlm_loss"] == baseline["mlm_loss"]
    assert reference["most_frequent_accuracy"] == baseline["mlm_accuracy"]


def test_eval_every_steps_shares_the_train_cadence_without_evaluating_a_step_twice(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2, eval_every_steps=3, eval_max_batches=1)
    result = Trainer(cfg).fit()
    evals = [r["step"] for r in read_metrics(tmp_path / "run") if r["kind"] == "eval"]
    assert evals == [0, 3, 6, 8, 9, 12, 15, 16]  # every 3 steps, plus epoch ends (8, 16)
    assert [r["step"] for r in result.eval_history] == evals


def test_checkpoint_loads_in_transformers_and_reproduces_logits(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, epochs=1))
    trainer.fit()
    path = ckpt.latest_checkpoint(tmp_path / "run")
    loaded = BertForPreTraining.from_pretrained(path).eval()
    original = trainer.module.bert.eval()
    ids = torch.randint(5, 50, (2, 16))
    with torch.no_grad():
        a, b = original(input_ids=ids), loaded(input_ids=ids)
    torch.testing.assert_close(a.prediction_logits, b.prediction_logits, rtol=0, atol=0)
    torch.testing.assert_close(a.seq_relationship_logits, b.seq_relationship_logits, rtol=0, atol=0)
    state = ckpt.load_training_state(path)  # weights_only=True: tensors and plain types only
    assert state["progress"]["step"] == 8 and "optimizer" in state


class Crash(RuntimeError):
    pass


def crash_after(monkeypatch, steps: int) -> None:
    """Make the N+1-th optimizer step raise, as if the process died there."""
    original = training.train_step
    calls = {"n": 0}

    def step(*args, **kwargs):
        if calls["n"] == steps:
            raise Crash(f"simulated crash before step {steps + 1}")
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", step)


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", [3, 8])  # mid-epoch, and just after an epoch end
def test_resume_after_crash_reproduces_uninterrupted_run_exactly(tmp_path, monkeypatch, crash_at):
    overrides = dict(epochs=3, save_every_steps=2, grad_accum_steps=2, batch_size=4)
    Trainer(tiny_config(tmp_path / "a", **overrides)).fit()
    reference = tmp_path / "a" / "run"

    with monkeypatch.context() as m:
        crash_after(m, crash_at)
        with pytest.raises(Crash):
            Trainer(tiny_config(tmp_path / "b", **overrides)).fit()
    resumed = tmp_path / "b" / "run"
    last_saved = ckpt.latest_checkpoint(resumed)
    assert last_saved.name == f"checkpoint-{crash_at - crash_at % 2:08d}"
    Trainer(tiny_config(tmp_path / "b", **overrides)).fit()  # the same command again

    assert train_losses(resumed) == train_losses(reference)  # bit-identical on CPU
    ref_w, res_w = final_weights(reference), final_weights(resumed)
    assert all(torch.equal(ref_w[k], res_w[k]) for k in ref_w)


def test_output_dir_with_a_different_run_is_refused_and_untouched(tmp_path):
    Trainer(tiny_config(tmp_path, epochs=1)).fit()
    run = tmp_path / "run"

    def files() -> dict:  # the run's files (a refused attempt does take the lock for a moment)
        return {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != ".lock"}

    before = files()
    with pytest.raises(ValueError, match=r"train_config.json: output folder holds a different run.*learning_rate"):
        Trainer(tiny_config(tmp_path, epochs=1, learning_rate=5e-4))
    with pytest.raises(ValueError, match="resume=False"):
        Trainer(tiny_config(tmp_path, epochs=1, resume=False))
    assert files() == before


def test_interrupted_save_never_hides_the_last_good_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, epochs=1))
    trainer.fit()
    run = tmp_path / "run"
    good = ckpt.latest_checkpoint(run)

    def dies_midway(state, path, **kwargs):
        path.write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    trainer.progress.step += 1
    with pytest.raises(KeyboardInterrupt):
        trainer.save()
    assert ckpt.latest_checkpoint(run) == good  # the partial save is invisible
    assert not list((run / "checkpoints").glob(".tmp-*"))  # and was cleaned up
    monkeypatch.undo()
    leftover = run / "checkpoints" / ".tmp-checkpoint-00000099-12345"  # as SIGKILL leaves it
    leftover.mkdir()
    trainer.progress.step += 1
    trainer.save()
    assert not leftover.exists() and ckpt.latest_checkpoint(run).name == "checkpoint-00000010"


def test_keeps_only_the_last_k_checkpoints(tmp_path):
    Trainer(tiny_config(tmp_path, epochs=2, save_every_steps=1, keep_last_checkpoints=3)).fit()
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "run")]
    assert names == ["checkpoint-00000014", "checkpoint-00000015", "checkpoint-00000016"]


@pytest.mark.parametrize("fused", [False, True])  # fused: the verdict stays on the device until logging
def test_repeated_non_finite_losses_stop_with_step_and_batch(tmp_path, fused):
    # No eval data: a starting model with NaN weights fails its step-0 evaluation (test_faults)
    trainer = Trainer(tiny_config(tmp_path, epochs=1, max_bad_steps=2, fused_adamw=fused, eval_data=None))
    with torch.no_grad():
        trainer.module.bert.bert.embeddings.word_embeddings.weight[5:].fill_(float("nan"))
    from bert_tutorial.pretrain.trainer import NonFiniteLossError

    with pytest.warns(UserWarning, match="non-finite gradient norm") as caught, \
            pytest.raises(NonFiniteLossError, match=r"2 consecutive non-finite gradients, last at step 2 \(epoch 0, samples 8-16"):
        trainer.fit()
    assert {w.filename for w in caught} == {__file__}  # the user's line, not the package's


def test_one_bad_step_is_skipped_without_touching_the_weights(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, epochs=1))
    batch = next(iter(torch.utils.data.DataLoader(trainer.train_data, batch_size=8)))
    batch["input_ids"][:] = 5
    with torch.no_grad():
        trainer.module.bert.bert.embeddings.word_embeddings.weight[5].fill_(float("inf"))
    before = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    result = train_step(trainer.model, [batch], trainer.optimizer, trainer.scheduler,
                        device=trainer.device)
    assert not result.updated and not torch.isfinite(result.grad_norm)
    after = trainer.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.scheduler.last_epoch == 1  # the schedule still advances: it counts steps


def test_token_ids_beyond_the_vocabulary_stop_training_with_file_and_field(tmp_path):
    from tiny import write_vocab

    cfg = tiny_config(tmp_path, epochs=1)
    cfg.vocab_file = str(write_vocab(tmp_path / "small_vocab.txt", size=30))  # shards use ids < 50
    with pytest.raises(ValueError, match=r"(train|eval)_\d\.hdf5: field '(input_ids|masked_lm_ids)' has token id \d+ >= vocab size 30"):
        Trainer(cfg).fit()


@pytest.mark.parametrize("bars_on", [True, False])
def test_saving_a_checkpoint_leaves_the_users_progress_bar_setting_alone(tmp_path, bars_on):
    from transformers import BertConfig
    from transformers.utils import logging as hf_logging

    model = BertForPreTraining(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                          num_attention_heads=1, intermediate_size=16))
    (hf_logging.enable_progress_bar if bars_on else hf_logging.disable_progress_bar)()
    try:
        ckpt.save_checkpoint(tmp_path / "out", model, {"progress": {"step": 1}}, step=1)
        assert hf_logging.is_progress_bar_enabled() is bars_on
    finally:
        hf_logging.enable_progress_bar()
