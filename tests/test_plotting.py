"""The training-curve figure: what it draws, from real metrics records (no pixels compared)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bert_tutorial.pretrain.curves import References, plot_runs, plot_training_curves, smooth


def records() -> list[dict]:
    refs = References(vocab_size=30522, unigram_mlm_loss=6.2, most_frequent_accuracy=0.066)
    out = [refs.to_record()]
    for step in range(0, 41, 10):
        out.append({"kind": "eval", "step": step, "mlm_loss": 10 - step / 10, "mlm_accuracy": step / 400,
                    "nsp_loss": 0.69, "nsp_accuracy": 0.5, "perplexity": math.exp(10 - step / 10)})
    for step in range(1, 41):
        out.append({"kind": "train", "step": step, "mlm_loss": 10 - step / 10, "nsp_loss": 0.7,
                    "lr": 1e-3 * step / 40, "seq_per_s": 80.0})
    return out


def test_references_round_trip_through_a_metrics_record():
    refs = References(vocab_size=50, unigram_mlm_loss=3.0, most_frequent_accuracy=0.2)
    assert References.from_records([{"kind": "eval", "step": 0}, refs.to_record()]) == refs
    assert References.from_records([{"kind": "eval", "step": 0}]) is None


def test_smooth_is_a_trailing_mean_that_never_looks_ahead():
    np.testing.assert_allclose(smooth([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(smooth([1, 2, 3], 1), [1, 2, 3])


def test_training_curves_carry_the_reference_lines_and_fitted_scales():
    recs = records()
    recs[1] = {**recs[1], "nsp_loss": 1.1}  # step 0's NSP loss, far above the rest
    fig = plot_training_curves(recs)
    mlm, mlm_acc, lr, nsp, nsp_acc = (ax for ax in fig.axes if ax.get_title())
    labels = {ax: [line.get_label() for line in ax.get_lines()] for ax in (mlm, mlm_acc, nsp, nsp_acc)}
    assert "uniform guess ln V = 10.33" in labels[mlm] and "token frequencies only = 6.20" in labels[mlm]
    assert mlm.get_title() == "MLM loss (perplexity on the right)"
    assert "coin flip ln 2 = 0.69" in labels[nsp]
    low, high = nsp.get_ylim()
    assert low < 0.69 and high > 1.1 and high - low < 1.0  # step 0 shown; fitted, not 0-1
    assert any("most frequent token = 6.6%" in label for label in labels[mlm_acc])
    low, high = mlm_acc.get_ylim()
    assert -0.02 < low <= 0 and 0.1 < high < 0.12  # fitted to the values (0-10 %), not 0-100 %
    assert "coin flip 50 %" in labels[nsp_acc] and nsp_acc.get_ylim()[1] - nsp_acc.get_ylim()[0] < 0.1
    assert [line.get_label() for line in lr.get_lines()] == ["learning rate"]  # no throughput twin
    [eval_line] = [line for line in mlm.get_lines() if line.get_label() == "eval (held out)"]
    assert list(eval_line.get_xdata()) == [0, 10, 20, 30, 40]


def test_training_curves_from_eval_records_only():
    evals = [r for r in records() if r["kind"] == "eval"]
    fig = plot_training_curves(evals)  # e.g. checkpoints evaluated after the run; no references
    assert fig.axes[0].get_lines()[0].get_label() == "eval (held out)"


@pytest.mark.parametrize("key", ["mlm_loss", "nsp_loss"])
def test_plot_runs_overlays_runs(key):
    fig = plot_runs({"DDP, 2 processes": records(), "1 process": records()}, key=key)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "DDP, 2 processes (train)" in labels and "1 process (eval)" in labels
    assert fig.axes[0].get_ylabel() == {"mlm_loss": "MLM loss (nats)", "nsp_loss": "NSP loss (nats)"}[key]


def test_epoch_runs_mark_each_runs_best_epoch_and_share_one_scale():
    from bert_tutorial.teach.epoch_runs import plot_epoch_runs

    runs = {"static": {"held_out": [7.0, 6.5, 6.2, 6.3], "train": [6.8, 5.9, 5.1]},
            "dynamic": {"held_out": [7.0, 6.6, 6.1, 5.9], "train": [6.9, 6.3, 6.0]}}
    fig = plot_epoch_runs(runs)
    held_out, train = fig.axes
    labels = [t.get_text() for t in held_out.get_legend().get_texts()]
    assert labels == ["static: best 6.20 (epoch 2), last 6.30", "dynamic: best 5.90 (epoch 3), last 5.90"]
    assert held_out.get_ylim() == train.get_ylim() and held_out.get_ylim()[0] < 5.1 < 7.0 < held_out.get_ylim()[1]
    stars = [line for line in held_out.get_lines() if line.get_marker() == "*"]
    assert [(list(s.get_xdata()), list(s.get_ydata())) for s in stars] == [([2], [6.2]), ([3], [5.9])]
