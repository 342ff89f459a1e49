"""``bert_tutorial.benchmark``: the FLOPs convention, the synthetic data, the two steps, a smoke run.

No assertion here depends on timing: the figures themselves are recorded in
``benchmarks/README.md``, not tested.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bert_tutorial.benchmark import (
    ModelDims,
    OriginalStep,
    ProjectStep,
    arrays_to_batch,
    encoder_matmul_params,
    flops_per_sequence,
    main,
    padded_vocab,
    parse_variant,
    peak_tflops,
    peak_tflops_for_name,
    synthetic_arrays,
)
from bert_tutorial.data import PretrainingDataset
from bert_tutorial.hdf5_format import FIELDS, validate_values, write_shard


def test_flops_of_bert_base_match_a_hand_computation():
    dims = ModelDims.for_size("base", 128)
    assert (dims.vocab_size, dims.hidden_size, dims.num_layers, dims.predictions) == (30522, 768, 12, 20)
    # 12 layers x (4 x 768^2 attention projections + 2 x 768 x 3072 FFN matrices)
    assert encoder_matmul_params(dims) == 12 * (4 * 589_824 + 2 * 2_359_296) == 84_934_656
    f = flops_per_sequence(dims)
    assert f["encoder"] == 6 * 128 * 84_934_656 == 65_229_815_808
    assert f["attention"] == 12 * 12 * 768 * 128 * 128 == 1_811_939_328
    assert f["mlm_head"] == 6 * 20 * 768 * (768 + 30522) == 2_883_686_400
    assert f["pooler_nsp"] == 6 * 768 * 770 == 3_548_160
    assert f["total"] == 69_928_989_696
    # The figures under this convention: 3,500 seq/s ~ 25 % and 240 seq/s < 2 % of 989 TFLOP/s.
    assert 0.24 < 3500 * f["total"] / 989e12 < 0.26
    assert 240 * f["total"] / 989e12 < 0.02


def test_flops_of_a_toy_config_by_hand():
    dims = ModelDims(vocab_size=10, hidden_size=4, num_layers=1, intermediate_size=8,
                     seq_len=8, predictions=2)
    # N = 4*16 + 2*4*8 = 128; encoder 6*8*128; attention 12*1*4*64; head 6*2*4*14; pooler 6*4*6.
    assert flops_per_sequence(dims) == {
        "encoder": 6144.0, "attention": 3072.0, "mlm_head": 672.0, "pooler_nsp": 144.0,
        "total": 10032.0,
    }
    assert ModelDims.for_size("base", 512).predictions == 80


def test_peak_table_and_override():
    assert peak_tflops_for_name("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops_for_name("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops_for_name("NVIDIA H200") == 989.0
    assert peak_tflops_for_name("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops_for_name("Tesla T4") is None
    cpu = torch.device("cpu")
    assert peak_tflops(cpu) is None
    assert peak_tflops(cpu, 2.5) == 2.5


def test_variant_parsing():
    original = parse_variant("original")
    assert original.original
    project = parse_variant("project")
    assert (project.precision, project.attn, project.sparse_head, project.fused_adamw,
            project.compile, project.vocab_multiple) == ("auto", "sdpa", True, None, False, 1)
    ablation = parse_variant("project+bf16+eager+fullhead+pad8")
    assert (ablation.precision, ablation.attn, ablation.sparse_head, ablation.vocab_multiple) == (
        "bf16", "eager", False, 8)
    compiled = parse_variant("project", compile_default=True)
    assert compiled.compile and compiled.name == "project+compile"
    assert not parse_variant("project+nocompile", compile_default=True).compile
    with pytest.raises(ValueError, match="unknown modifier"):
        parse_variant("project+turbo")
    with pytest.raises(ValueError, match="takes no modifiers"):
        parse_variant("original+bf16")
    assert padded_vocab(30522, 8) == 30528
    assert padded_vocab(30528, 8) == 30528


def test_synthetic_arrays_are_a_valid_shard_and_collate_like_the_loader(tmp_path):
    arrays = synthetic_arrays(64, 128, 20, seed=1)
    assert {k: (v.dtype, v.ndim) for k, v in arrays.items()} == {
        k: (np.dtype(dtype), ndim) for k, (dtype, ndim) in FIELDS.items()}
    validate_values("synthetic", arrays, vocab_size=30522)
    lengths = arrays["input_mask"].sum(1)
    assert (lengths == 128).mean() > 0.7  # mostly full sequences, some padded
    masked = (arrays["masked_lm_positions"] != 0).sum(1)
    np.testing.assert_array_equal(masked, np.minimum(20, np.rint(lengths * 0.15)))
    for row, n in zip(arrays["masked_lm_positions"], masked, strict=True):
        assert np.all(np.diff(row[:n]) > 0) and np.all(row[n:] == 0)
    ids = arrays["input_ids"]
    assert np.all(ids[:, 0] == 101)
    np.testing.assert_array_equal(np.take_along_axis(ids, arrays["masked_lm_positions"], 1)[
        arrays["masked_lm_positions"] != 0], 103)

    data = PretrainingDataset(write_shard(tmp_path / "s.hdf5", arrays), vocab_size=30522)
    loaded = torch.utils.data.default_collate([data[i] for i in range(len(data))])
    batch = arrays_to_batch(arrays)
    assert loaded.keys() == batch.keys()
    for key in batch:
        torch.testing.assert_close(batch[key], loaded[key], rtol=0, atol=0)


def test_original_and_project_steps_give_the_same_loss_on_the_same_batch_and_weights():
    """Apples to apples: same weights, same batch, fp32 and no dropout -> same losses,
    step after step (the updates agree up to the weight decay of biases/LayerNorm, which
    the original applied and this project does not)."""
    vocab = 1024
    arrays = synthetic_arrays(6, 32, 5, vocab_size=vocab, seed=3)
    batch = arrays_to_batch(arrays)
    cpu = torch.device("cpu")
    original = OriginalStep("tiny", vocab, batch, cpu, dropout=0.0, seed=7)
    project = ProjectStep(parse_variant("project+fp32"), "tiny", vocab, batch, arrays, cpu,
                          dropout=0.0, seed=7)
    try:
        mine, theirs = project.module.state_dict(), original.model.state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
        assert project.module.config._attn_implementation == "sdpa"
        assert original.model.config._attn_implementation == "eager"
        for _ in range(3):
            original.step()
            project.step()
        mine_losses = torch.stack(project.losses).float()  # the Trainer sums in float64
        torch.testing.assert_close(mine_losses, torch.stack(original.losses), rtol=1e-4, atol=1e-5)
        assert original.losses[-1] < original.losses[0]  # the steps do train
    finally:
        original.close()
        project.close()


def test_quick_benchmark_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--device", "cpu", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for column in ("variant", "seq/s", "ms/step median", "ms/step mean", "peak mem MiB",
                   "TFLOP/s", "MFU", "speedup", "samples/s per worker"):
        assert column in text
    assert "no CUDA device" in text
    assert "GFLOP/sequence" in text and "num_workers >=" in text
    report = json.loads(out.read_text())
    assert [r["variant"] for r in report["model"]] == ["original", "project", "project+bf16"]
    assert all(r["seq_per_s"] > 0 and r["mfu"] is None for r in report["model"])
    assert [(r["loader"], r["workers"]) for r in report["data"]["loaders"]] == [
        ("original: Python lists", 0), ("PretrainingDataset", 0), ("PretrainingDataset", 1)]
    assert report["data"]["num_samples"] == 2000
    assert report["environment"]["torch"] == torch.__version__
