"""Two domains in continued pre-training: the figure (what it draws) and the mixed shards."""

from __future__ import annotations

import warnings

import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from bert_tutorial.config import DATA_SAMPLES
from bert_tutorial.core.data import PretrainingDataset, find_shards
from bert_tutorial.hdf5_format import inspect_shard, read_shard
from bert_tutorial.teach.domains import mix_shards, plot_domain_curves

CURVES = {"new": {0: 7.4, 25: 6.9, 50: 6.4, 150: 6.0}, "old": {0: 5.8, 50: 6.0, 150: 6.2}}
BASELINES = {"new": 6.1, "old": 6.25}


def test_domain_curves_draw_each_domain_with_its_baseline_in_its_colour():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. log(0) of the perplexity axis
        fig = plot_domain_curves(CURVES, BASELINES)
        fig.canvas.draw()
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.child_axes) == 1  # perplexity on the right
    solid = [line for line in ax.lines if line.get_linestyle() == "-"]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert [list(line.get_xdata()) for line in solid] == [[0, 25, 50, 150], [0, 50, 150]]
    assert [line.get_ydata()[0] for line in dashed] == [6.1, 6.25]
    for curve, base in zip(solid, dashed, strict=True):
        assert to_rgba(curve.get_color()) == to_rgba(base.get_color())
    low, high = ax.get_ylim()
    assert low < 5.8 and 7.4 < high < 8  # the axis follows the data: the changes fill it
    labels = ax.get_legend_handles_labels()[1]
    assert "new: 7.40 \u2192 6.00 (-1.40)" in labels and "old: 5.80 \u2192 6.20 (+0.40)" in labels


def test_mix_shards_shuffles_every_sequence_of_the_sources_together(tmp_path):
    sources = [DATA_SAMPLES / "eval", DATA_SAMPLES / "bible-eval"]  # 301 + 473 sequences
    out = mix_shards(sources, tmp_path / "mixed", shard_size=300)
    mixed = PretrainingDataset(out)
    assert mixed.shard_sizes == [300, 300, 174]

    def rows(paths):
        return {row.tobytes() for p in paths for row in read_shard(inspect_shard(p))["input_ids"]}

    austen, bible = rows(find_shards(sources[0])), rows(find_shards(sources[1]))
    assert rows(find_shards(out)) == austen | bible  # every sequence, once
    first = rows(find_shards(out)[:1])
    assert 100 < len(first & austen) < 200 and 100 < len(first & bible) < 200  # mixed within a shard
    stamp = [p.stat().st_mtime_ns for p in find_shards(out)]
    assert mix_shards(sources, tmp_path / "mixed", shard_size=300) == out  # made once, reused
    assert [p.stat().st_mtime_ns for p in find_shards(out)] == stamp


def test_mix_shards_takes_a_sample_and_remakes_the_folder_for_other_arguments(tmp_path):
    source = DATA_SAMPLES / "bible-eval"  # 473 sequences
    everything = {row.tobytes() for row in PretrainingDataset(source).load_shard(0)["input_ids"]}
    out = mix_shards([source], tmp_path / "small", sequences=100)
    sample = PretrainingDataset(out)
    rows = {row.tobytes() for row in sample.load_shard(0)["input_ids"]}
    assert len(sample) == 100 and len(rows) == 100 and rows <= everything
    assert len(PretrainingDataset(mix_shards([source], tmp_path / "small", sequences=50))) == 50
    with pytest.raises(ValueError, match="sequences=474: the sources hold 473"):
        mix_shards([source], tmp_path / "small", sequences=474)


def test_mix_shards_refuses_sources_of_different_lengths(tmp_path):
    from bert_tutorial.teach.book_shards import make_sample_shards

    short = make_sample_shards(tmp_path / "b32", max_seq_length=32, corpus="bible", progress=False)
    with pytest.raises(ValueError, match="different"):
        mix_shards([DATA_SAMPLES / "bible-eval", short["eval_data"]], tmp_path / "bad")
    assert not list((tmp_path / "bad").glob("*.hdf5"))
