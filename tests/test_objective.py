"""--objective mlm: masked LM only, the NSP head frozen and out of every figure."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny_config
from transformers import BertForMaskedLM, BertForPreTraining

from bert_tutorial.config import DATA_SAMPLES, TrainConfig
from bert_tutorial.core.data import PretrainingDataset, make_dataloader
from bert_tutorial.core.evaluation import evaluate
from bert_tutorial.core.model import PretrainingModel, build_model
from bert_tutorial.pretrain import checkpoint as ckpt
from bert_tutorial.pretrain.cli import config_from_args
from bert_tutorial.pretrain.curves import plot_training_curves
from bert_tutorial.pretrain.metrics import read_metrics
from bert_tutorial.pretrain.run_dir import RunDirError
from bert_tutorial.pretrain.trainer import Trainer

NSP_WEIGHTS = ("bert.pooler.dense.weight", "bert.pooler.dense.bias",
               "cls.seq_relationship.weight", "cls.seq_relationship.bias")


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return next(iter(make_dataloader(PretrainingDataset(DATA_SAMPLES / "eval"), 8)))


def small_bert() -> BertForPreTraining:
    torch.manual_seed(0)
    return build_model(TrainConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, dropout=0.0), 30522)


def test_the_mlm_only_loss_is_the_mlm_part_of_the_full_loss(batch):
    bert = small_bert()
    both = PretrainingModel(bert)(**batch)
    mlm_only = PretrainingModel(bert, nsp=False)(**batch)
    torch.testing.assert_close(mlm_only.loss, both.mlm_loss, rtol=0, atol=0)
    assert mlm_only.nsp_count == 0 and mlm_only.nsp_loss_sum == 0
    frozen = {name for name, p in bert.named_parameters() if not p.requires_grad}
    assert frozen == set(NSP_WEIGHTS)  # the pooler feeds only the NSP head


def test_evaluation_of_an_mlm_only_model_reports_mlm_alone(batch):
    model = PretrainingModel(small_bert(), nsp=False)
    result = evaluate(model, [batch])
    assert set(result) == {"mlm_loss", "mlm_accuracy", "loss", "perplexity", "masked_tokens"}
    assert result["loss"] == result["mlm_loss"] > 0


def test_an_mlm_only_run_leaves_the_nsp_head_and_loads_as_a_masked_lm(tmp_path):
    cfg = tiny_config(tmp_path, objective="mlm", epochs=1, plots=True)
    trainer = Trainer(cfg)
    start = {name: value.clone() for name, value in trainer.module.bert.state_dict().items()}
    trainer.fit()
    records = read_metrics(tmp_path / "run")
    assert all("nsp_loss" not in r and "nsp_accuracy" not in r for r in records
               if r["kind"] in ("train", "eval"))
    assert (tmp_path / "run" / "loss_curves.png").stat().st_size > 0
    path = ckpt.latest_checkpoint(tmp_path / "run")
    saved = load_file(path / "model.safetensors")
    for name in NSP_WEIGHTS:
        assert torch.equal(saved[name], start[name]), f"{name} was trained"
    assert not torch.equal(saved["cls.predictions.transform.dense.weight"],
                           start["cls.predictions.transform.dense.weight"])

    ids = torch.randint(5, 50, (2, 16))
    pretraining = BertForPreTraining.from_pretrained(path).eval()
    masked_lm = BertForMaskedLM.from_pretrained(path).eval()
    with torch.no_grad():
        expected = trainer.module.bert.eval()(input_ids=ids).prediction_logits
        torch.testing.assert_close(pretraining(input_ids=ids).prediction_logits, expected, rtol=0, atol=0)
        torch.testing.assert_close(masked_lm(input_ids=ids).logits, expected, rtol=0, atol=0)


def test_resuming_with_the_other_objective_is_refused(tmp_path):
    Trainer(tiny_config(tmp_path, objective="mlm", epochs=1, max_steps=2)).fit()
    with pytest.raises(RunDirError, match="objective"):
        Trainer(tiny_config(tmp_path, objective="mlm+nsp", epochs=1, max_steps=4))


def test_a_run_started_before_the_switches_existed_resumes_with_their_defaults():
    from bert_tutorial.pretrain.run_dir import config_differences

    stored = TrainConfig().to_dict()
    for name in ("objective", "masking", "masked_lm_prob", "whole_word_masking"):
        del stored[name]
    assert config_differences(stored, TrainConfig().to_dict()) == []
    assert config_differences(stored, TrainConfig(objective="mlm").to_dict()) == ["objective"]


def test_the_command_line_takes_the_switches():
    cfg = config_from_args(["--objective", "mlm", "--masking", "dynamic", "--whole-word-masking",
                            "--masked-lm-prob", "0.2"])
    assert (cfg.objective, cfg.masking, cfg.whole_word_masking, cfg.masked_lm_prob) == \
        ("mlm", "dynamic", True, 0.2)
    with pytest.raises(SystemExit):
        config_from_args(["--objective", "nsp"])


def test_the_curves_of_an_mlm_only_run_have_no_nsp_panels():
    records = [{"kind": "eval", "step": 0, "mlm_loss": 7.0, "mlm_accuracy": 0.05, "loss": 7.0},
               {"kind": "train", "step": 1, "lr": 1e-3, "mlm_loss": 6.5, "loss": 6.5},
               {"kind": "eval", "step": 1, "mlm_loss": 6.0, "mlm_accuracy": 0.1, "loss": 6.0}]
    fig = plot_training_curves(records)
    titles = [ax.get_title() for ax in fig.axes]
    assert not any("NSP" in t for t in titles) and any(t.startswith("MLM loss") for t in titles)
    [summary] = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "last eval @1" in summary and "6.000" in summary
