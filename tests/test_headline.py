"""The tutorial's headline figures, on the shipped data and model (one test per claim).

The shipped starting model (``data_samples/base-model``, chapters 1-40) must already beat
the no-context baselines on held-out chapters 56-61; its figures are the ones its model
card states. Notebook 05 continues it on chapters 41-55 and asserts it improves further.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from bert_tutorial import (
    PretrainingDataset,
    PretrainingModel,
    evaluate,
    frequency_baseline,
    load_pretrained,
    make_dataloader,
)
from bert_tutorial.config import DATA_SAMPLES

BASE_MODEL = DATA_SAMPLES / "base-model"


@pytest.fixture(scope="module")
def base_eval() -> dict[str, float]:
    bert = load_pretrained(str(BASE_MODEL))
    data = PretrainingDataset(DATA_SAMPLES / "eval", vocab_size=bert.config.vocab_size)
    return evaluate(PretrainingModel(bert), make_dataloader(data, 32), torch.device("cpu"))


def test_the_shipped_model_is_small_half_precision_and_loads_as_fp32():
    sizes = {p.name: p.stat().st_size for p in BASE_MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "README.md"} <= set(sizes)
    assert sum(sizes.values()) < 10.5e6
    assert json.loads((BASE_MODEL / "config.json").read_text())["vocab_size"] == 30522
    assert load_pretrained(str(BASE_MODEL)).dtype == torch.float32


def test_the_starting_model_beats_the_frequency_baselines_on_held_out_chapters(base_eval):
    baseline = frequency_baseline(DATA_SAMPLES / "train", DATA_SAMPLES / "eval", 30522)
    assert base_eval["sequences"] == 301
    assert base_eval["mlm_loss"] < baseline["mlm_loss"] - 0.2
    assert base_eval["mlm_accuracy"] >= 2 * baseline["mlm_accuracy"]


def test_the_model_card_states_the_measured_figures(base_eval):
    card = (BASE_MODEL / "README.md").read_text()
    for key in ("mlm_loss", "mlm_accuracy"):
        value = base_eval[key]
        shown = f"{value:.4f}" if key == "mlm_loss" else f"{100 * value:.2f} %"
        assert shown in card, f"model card should state {key} = {shown}"
    assert re.search(r"sha256", card)


def test_the_readme_quotes_the_same_starting_figures(base_eval):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"{100 * base_eval['mlm_accuracy']:.1f} %" in readme
    assert f"{base_eval['mlm_loss']:.3f} ({base_eval['perplexity']:,.0f})" in readme  # the results table
