"""The benchmark scripts in ``benchmarks/``: FLOPs, peaks, variants, their data, their steps, a smoke run.

The scripts are not part of the package; they are imported from ``benchmarks/`` as they
import each other (their folder on ``sys.path``). No assertion depends on timing: the
figures are recorded in ``benchmarks/README.md``, not tested.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from shards import CLS, MASK, SEP, make_arrays
from synthetic import synthetic_arrays

from bert_tutorial.core.data import PretrainingDataset
from bert_tutorial.hdf5_format import FIELDS, validate_values, write_shard

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
CPU = torch.device("cpu")


def load(name: str) -> ModuleType:
    """Import a script from ``benchmarks/`` the way it imports ``common`` when run."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


common = load("common")
bench_step = load("bench_step")
bench_data = load("bench_data")


@pytest.fixture
def one_thread():
    """Two torch threads on two busy cores crawl; restore the count for the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# --- FLOPs and peaks --------------------------------------------------------------------------


def test_flops_of_bert_base_match_a_hand_computation():
    dims = common.ModelDims.for_size("base", 128)
    assert (dims.vocab_size, dims.hidden_size, dims.num_layers, dims.predictions) == (30522, 768, 12, 20)
    # 12 layers x (4 x 768^2 attention projections + 2 x 768 x 3072 FFN matrices)
    assert common.encoder_matmul_params(dims) == 12 * (4 * 589_824 + 2 * 2_359_296) == 84_934_656
    f = common.flops_per_sequence(dims)
    assert f["encoder"] == 6 * 128 * 84_934_656 == 65_229_815_808
    assert f["attention"] == 12 * 12 * 768 * 128 * 128 == 1_811_939_328
    assert f["mlm_head"] == 6 * 20 * 768 * (768 + 30522) == 2_883_686_400
    assert f["pooler_nsp"] == 6 * 768 * 770 == 3_548_160
    assert f["total"] == 69_928_989_696
    # The figures under this convention: 3,500 seq/s ~ 25 % and 240 seq/s < 2 % of 989 TFLOP/s.
    assert 0.24 < 3500 * f["total"] / 989e12 < 0.26
    assert 240 * f["total"] / 989e12 < 0.02


def test_flops_of_a_toy_config_by_hand():
    dims = common.ModelDims(vocab_size=10, hidden_size=4, num_layers=1, intermediate_size=8,
                            seq_len=8, predictions=2)
    # N = 4*16 + 2*4*8 = 128; encoder 6*8*128; attention 12*1*4*64; head 6*2*4*14; pooler 6*4*6.
    assert common.flops_per_sequence(dims) == {
        "encoder": 6144.0, "attention": 3072.0, "mlm_head": 672.0, "pooler_nsp": 144.0,
        "total": 10032.0,
    }
    assert common.ModelDims.for_size("base", 512).predictions == 80


def test_real_token_flops_of_two_sequences_by_hand():
    """Real work counts each sequence over its own length and real slots; padded work charges
    both T=8 positions and P=2 slots, as ``flops_per_sequence`` does."""
    dims = common.ModelDims(vocab_size=10, hidden_size=4, num_layers=1, intermediate_size=8,
                            seq_len=8, predictions=2)
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])  # lengths 8 and 5
    ids = torch.tensor([[7, 9], [6, -100]])  # 2 real slots, then 1
    work = common.batch_work(dims, mask, ids)
    # N = 128: encoder 6*128*(8+5); attention 12*1*4*(8^2+5^2); head 6*(2+1)*4*14; pooler 2*6*4*6.
    assert work.real_flops == 6 * 128 * 13 + 12 * 4 * 89 + 6 * 3 * 4 * 14 + 2 * 144 == 15_552
    assert work.padded_flops == 2 * 10_032 == 2 * common.flops_per_sequence(dims)["total"]
    assert (work.sequences, work.positions, work.real_tokens, work.slots, work.real_slots) == (2, 16, 13, 4, 3)
    assert work.padding_share == 3 / 16
    work.merge(common.batch_work(dims, mask[:1], ids[:1]))  # the full row again: no padding
    assert work.real_flops == 15_552 + 10_032 and work.padding_share == 3 / 24
    assert np.isnan(common.BatchWork().padding_share)


@pytest.mark.parametrize(("name", "tflops", "dtype"), [
    ("NVIDIA H100 80GB HBM3", 989.0, "bf16"), ("NVIDIA H100 PCIe", 756.0, "bf16"),
    ("NVIDIA H100 NVL", 835.0, "bf16"), ("NVIDIA H200", 989.0, "bf16"),
    ("NVIDIA H200 NVL", 835.0, "bf16"), ("NVIDIA GH200 480GB", 989.0, "bf16"),
    ("NVIDIA A100-SXM4-80GB", 312.0, "bf16"), ("NVIDIA L40S", 362.0, "bf16"),
    ("NVIDIA L4", 121.0, "bf16"), ("NVIDIA A10", 125.0, "bf16"), ("NVIDIA A10G", 125.0, "bf16"),
    ("Tesla T4", 65.0, "fp16 (T4 has no bf16)"),
])
def test_peak_table(name, tflops, dtype):
    assert common.peak_for_name(name) == (tflops, dtype)


def test_peak_of_unknown_devices_and_override():
    assert common.peak_for_name("NVIDIA GeForce GTX 1080") is None
    assert common.peak_tflops(CPU) == (None, "no peak for a CPU (pass --peak-tflops)")
    assert common.peak_tflops(CPU, 2.5) == (2.5, "--peak-tflops")


def test_environment_is_recorded_without_nvidia_smi(monkeypatch):
    env = common.environment(CPU)
    import transformers

    assert (env["torch"], env["transformers"]) == (torch.__version__, transformers.__version__)
    monkeypatch.setattr(common.shutil, "which", lambda name: None)
    assert common.nvidia_smi() == {}
    monkeypatch.setattr(common.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 0, stdout="NVIDIA H100 PCIe, 550.54, 1755 MHz, 1755 MHz, 1593 MHz, 350.00 W\n")

    monkeypatch.setattr(common.subprocess, "run", fake_run)
    smi = common.nvidia_smi()
    assert smi["nvidia-smi driver_version"] == "550.54" and smi["nvidia-smi clocks.max.sm"] == "1755 MHz"

    def failing_run(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, 20)

    monkeypatch.setattr(common.subprocess, "run", failing_run)
    assert common.nvidia_smi() == {}
    assert set(common.tf32_matmul()) == {"allow_tf32", "float32_matmul_precision", "on"}


# --- variants and defaults --------------------------------------------------------------------


def test_variant_parsing():
    parse = bench_step.parse_variant
    assert parse("original").original
    project = parse("project")
    assert (project.precision, project.attn, project.sparse_head, project.fused_adamw,
            project.compile, project.vocab_multiple) == ("auto", "sdpa", True, None, False, 1)
    ablation = parse("project+bf16+eager+fullhead+pad8")
    assert (ablation.precision, ablation.attn, ablation.sparse_head, ablation.vocab_multiple) == (
        "bf16", "eager", False, 8)
    assert parse("project+fp16+nofused+pad64").fused_adamw is False
    compiled = parse("project", compile_default=True)
    assert compiled.compile and compiled.name == "project+compile"
    assert not parse("project+nocompile", compile_default=True).compile
    with pytest.raises(ValueError, match="unknown modifier"):
        parse("project+turbo")
    with pytest.raises(ValueError, match="takes no modifiers"):
        parse("original+bf16")
    with pytest.raises(ValueError, match="'original' or 'project"):
        parse("mine")
    assert bench_step.padded_vocab(30522, 8) == 30528 and bench_step.padded_vocab(30528, 8) == 30528


def test_gpu_defaults_run_several_seconds_per_row():
    args = bench_step.resolve_args(bench_step.build_parser().parse_args([]), torch.device("cuda"))
    assert (args.steps, args.warmup, args.variants) == (200, None, "original,project")
    assert bench_step.batch_sizes(args, 128, torch.device("cuda")) == (128, 16)
    assert bench_step.batch_sizes(args, 512, torch.device("cuda")) == (32, 16)
    cpu = bench_step.resolve_args(bench_step.build_parser().parse_args([]), CPU)
    assert (cpu.steps, cpu.warmup, bench_step.batch_sizes(cpu, 128, CPU)) == (3, 1, (4, 4))


def imported_names(script: Path) -> set[str]:
    """Every module and name a script imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom):
            names |= {node.module or ""} | {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_scripts_use_only_public_package_names_and_bench_step_writes_no_files():
    for script in BENCHMARKS.glob("*.py"):
        tree = ast.parse(script.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bert_tutorial"):
                assert not [a.name for a in node.names if a.name.startswith("_")], script.name
        assert "bert_tutorial" not in imported_names(script)  # only ``from bert_tutorial.x import y``
    step = BENCHMARKS / "bench_step.py"
    assert "write_shard" not in imported_names(step)
    # Only --trainer-steps writes files: the Trainer's run, in a temporary folder it removes.
    for node in ast.walk(ast.parse(step.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name != "trainer_throughput":
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not {"Trainer", "tempfile"} & used, node.name


# --- the synthetic data -----------------------------------------------------------------------


def test_synthetic_arrays_are_a_valid_shard_shaped_like_googles():
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
    assert np.all(ids[:, 0] == 101) and np.all((ids == 102).sum(1) == 2)
    np.testing.assert_array_equal(np.take_along_axis(ids, arrays["masked_lm_positions"], 1)[
        arrays["masked_lm_positions"] != 0], 103)
    np.testing.assert_array_equal(synthetic_arrays(64, 128, 20, seed=1)["input_ids"], ids)


def test_the_tests_toy_shards_come_from_the_same_generator_with_edge_cases():
    arrays = make_arrays(num_samples=200, seq_length=16, max_predictions=4, seed=2)
    validate_values("toy", arrays, vocab_size=50)
    ids, positions = arrays["input_ids"], arrays["masked_lm_positions"]
    lengths, masked = arrays["input_mask"].sum(1), (positions != 0).sum(1)
    assert lengths.min() == 5 and lengths.max() == 16
    assert set(masked.tolist()) == {0, 1, 2, 3, 4}  # rows without any masked token too
    assert np.all(ids[:, 0] == CLS) and np.all((ids == SEP).sum(1) == 2)
    assert (ids == MASK).sum() == masked.sum()
    assert np.all(arrays["segment_ids"].sum(1) >= 2)  # sentence B: a word and its [SEP]


def test_synthetic_batch_is_what_the_loader_gives(tmp_path):
    arrays = synthetic_arrays(64, 128, 20, seed=1)
    data = PretrainingDataset(write_shard(tmp_path / "s.hdf5", arrays), vocab_size=30522)
    loaded = torch.utils.data.default_collate([data[i] for i in range(len(data))])
    batch = bench_step.synthetic_batch(64, 128, 30522, seed=1)
    assert loaded.keys() == batch.keys()
    for key in batch:
        torch.testing.assert_close(batch[key], loaded[key], rtol=0, atol=0)


# --- the two steps ----------------------------------------------------------------------------


def test_both_steps_start_from_the_same_weights_and_the_project_loss_is_berts_own():
    """Same seed, same weights; with dropout 0 in fp32 the project step's first loss is
    exactly the loss ``BertForPreTraining`` computes itself from ``labels=``."""
    vocab = 1024
    batch = bench_step.synthetic_batch(6, 32, vocab, seed=3)
    variant = bench_step.parse_variant("project+fp32")
    cfg = bench_step.step_config(variant, "tiny", 32, 6, CPU, dropout=0.0, seed=7)
    project = bench_step.project_runner(variant, cfg, vocab, batch, CPU)
    original = bench_step.original_runner(cfg, vocab, batch, CPU, max_grad_norm=1.0)
    mine, theirs = project.bert.state_dict(), original.bert.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert (project.described["attn"], original.described["attn"]) == ("sdpa", "eager")
    assert project.described == {"precision": "fp32", "attn": "sdpa", "head": "masked",
                                 "adamw": "for-loop", "compile": "no"}
    with torch.no_grad():
        reference = project.bert(
            input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
            attention_mask=batch["attention_mask"], labels=batch["labels"],
            next_sentence_label=batch["next_sentence_label"]).loss
    losses = [project.step() for _ in range(3)]
    torch.testing.assert_close(losses[0].float(), reference, rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0]  # the step trains
    assert torch.isfinite(original.step())


def test_compiled_variants_start_from_a_fresh_dynamo(monkeypatch):
    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    monkeypatch.setattr(torch, "compile", lambda module, mode=None: module)
    batch = bench_step.synthetic_batch(2, 16, 64, seed=0)
    for spec in ("project+compile", "project+compile+pad8"):
        variant = bench_step.parse_variant(spec)
        cfg = bench_step.step_config(variant, "tiny", 16, 2, CPU, dropout=0.0, seed=0)
        runner = bench_step.project_runner(variant, cfg, 60, batch, CPU)
    assert len(resets) == 2 and runner.described["compile"] == "yes"
    assert runner.described["head"] == "masked/V=64"


# --- smoke runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("bf16_instructions", [True, False])
def test_quick_step_benchmark_runs_end_to_end(tmp_path, capsys, one_thread, monkeypatch, bf16_instructions):
    """The CPU default adds a bf16 row only where the CPU computes bf16 natively (else it is
    emulated: 34-43x slower for BERT-base)."""
    monkeypatch.setattr(bench_step, "cpu_has_bf16", lambda: bf16_instructions)
    out = tmp_path / "step.json"
    assert bench_step.main(["--quick", "--device", "cpu", "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for column in bench_step.COLUMNS:
        assert column in text
    assert "no CUDA device" in text and "GFLOP/sequence" in text
    report = json.loads(out.read_text())
    wanted = ["original", "project"] + (["project+bf16"] if bf16_instructions else [])
    assert [r["variant"] for r in report["model"]] == wanted
    assert all(r["seq_per_s"] > 0 and r["mfu"] is None and len(r["step_ms"]) == 2 for r in report["model"])
    assert report["environment"]["torch"] == torch.__version__
    # The default is unchanged: one synthetic batch, its padding (4 rows of T=32) counted.
    batch = bench_step.synthetic_batch(4, 32, 1024, seed=0)
    padding = 1 - batch["attention_mask"].float().mean().item()
    for r in report["model"]:
        assert r["data"] == "synthetic" and r["profile"] is None and "trainer" not in report
        assert r["padding_share"] == pytest.approx(padding) and r["real_tflops"] <= r["tflops"]


def shard_rows(folder: Path) -> dict[str, np.ndarray]:
    """``input_mask`` and ``masked_lm_positions`` of a folder's shards, read with h5py."""
    import h5py

    rows: dict[str, list[np.ndarray]] = {"input_mask": [], "masked_lm_positions": []}
    for path in sorted(folder.glob("*.hdf5")):
        with h5py.File(path, "r") as f:
            for name, parts in rows.items():
                parts.append(f[name][:])
    return {name: np.concatenate(parts) for name, parts in rows.items()}


def test_quick_step_benchmark_on_real_shards_with_the_trainer_beside_it(tmp_path, capsys, one_thread):
    """``--data``: a new batch per step through the Trainer's loader; the padding share is the
    timed batches' real padding, and real-token MFU counts their real lengths and slots."""
    data = Path(__file__).resolve().parent.parent / "data_samples" / "train"
    out = tmp_path / "step.json"
    assert bench_step.main(["--quick", "--device", "cpu", "--threads", "1", "--variants", "project",
                            "--data", str(data), "--batch-size", "8", "--peak-tflops", "1",
                            "--trainer-steps", "6", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "a new batch per step" in text and "Trainer / benchmark" in text
    report = json.loads(out.read_text())
    (row,) = report["model"]
    assert (row["data"], row["seq_len"], row["batch_size"]) == (str(data), 128, 8)

    # Independently: the rows the sampler hands out, their masks read with h5py.
    rows = shard_rows(data)
    lengths = rows["input_mask"].sum(1).astype(np.float64)
    slots = (rows["masked_lm_positions"] != 0).sum(1)  # a real slot never points at [CLS]
    assert report["data"]["padding_share"] == pytest.approx(1 - lengths.sum() / rows["input_mask"].size)
    assert 0.05 < report["data"]["padding_share"] < 0.15  # data_samples/train: about 9 %
    order = list(bench_step.ShardedSampler(PretrainingDataset(data), shuffle=True, seed=0))
    timed = order[8:8 + 2 * 8]  # --quick: one warm-up batch of 8, then two timed ones
    assert row["padding_share"] == pytest.approx(1 - lengths[timed].sum() / (16 * 128))
    assert row["padding_share"] > 0
    # Real over padded work, from the same hand formula as test_real_token_flops_...
    d, n_w, v = 128, 2 * (4 * 128 * 128 + 2 * 128 * 512), 30522
    t = lengths[timed]
    real = (6 * n_w * t + 12 * 2 * d * t**2 + 6 * slots[timed] * d * (d + v) + 6 * d * (d + 2)).sum()
    padded = 16 * (6 * n_w * 128 + 12 * 2 * d * 128**2 + 6 * 20 * d * (d + v) + 6 * d * (d + 2))
    assert row["real_tflops"] / row["tflops"] == pytest.approx(real / padded)
    assert row["real_token_mfu"] / row["mfu"] == pytest.approx(real / padded)

    trainer = report["trainer"]
    assert (trainer["variant"], trainer["steps"], trainer["batch_size"]) == ("project", 6, 8)
    assert [w["step"] for w in trainer["windows"]] == [1, 2, 3, 4, 5, 6]  # logs every step of 6
    assert trainer["seq_per_s_steady"] > 0 and trainer["bench_seq_per_s"] == row["seq_per_s"]
    assert trainer["trainer_over_bench"] == pytest.approx(trainer["seq_per_s_steady"] / row["seq_per_s"])


def test_data_fixes_the_sequence_length_and_the_trainer_needs_data():
    data = PretrainingDataset(Path(__file__).resolve().parent.parent / "data_samples" / "train")
    args = bench_step.build_parser().parse_args(["--data", "x", "--seq-lens", "512"])
    with pytest.raises(SystemExit, match="have T=128"):
        bench_step.resolve_args(args, CPU, data)
    args = bench_step.resolve_args(bench_step.build_parser().parse_args(["--data", "x", "--quick"]), CPU, data)
    assert (args.seq_lens, args.vocab_size, args.model_size) == ([128], 30522, "tiny")
    with pytest.raises(SystemExit, match="needs --data"):
        bench_step.main(["--quick", "--device", "cpu", "--trainer-steps", "3"])


# --- profile ----------------------------------------------------------------------------------


def test_profile_of_the_project_step_on_a_cpu_names_its_matmuls():
    batch = bench_step.synthetic_batch(2, 16, 64, seed=0)
    variant = bench_step.parse_variant("project")
    cfg = bench_step.step_config(variant, "tiny", 16, 2, CPU, dropout=0.0, seed=0)
    runner = bench_step.project_runner(variant, cfg, 64, batch, CPU)
    ops = bench_step.profile_runner(runner, CPU, steps=2, top=12)
    assert 0 < len(ops) <= 12
    names = [op["name"] for op in ops]
    assert {"aten::mm", "aten::addmm"} & set(names), names
    times = [op["self_ms_per_step"] for op in ops]
    assert times == sorted(times, reverse=True) and times[-1] > 0
    assert 0 < sum(op["share"] for op in ops) <= 1 + 1e-9
    text = bench_step.format_profile(ops)
    assert "self ms/step" in text and names[0] in text


def test_profile_on_a_gpu_counts_kernels_not_the_ops_that_launch_them():
    """An aten op's self CUDA time is its kernels' time: only device events are counted."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def event(key, device_type, us, count=1, annotation=False):
        return SimpleNamespace(key=key, device_type=device_type, self_device_time_total=us,
                               self_cpu_time_total=5.0, count=count, is_user_annotation=annotation)

    events = [event("aten::mm", DeviceType.CPU, 300.0), event("sm90_xmma_gemm_bf16", DeviceType.CUDA, 300.0, 4),
              event("triton_poi_fused_add", DeviceType.CUDA, 100.0, 2), event("Memcpy HtoD", DeviceType.CUDA, 0.0),
              event("Optimizer.step#AdamW.step", DeviceType.CUDA, 90.0, annotation=True)]
    ops = bench_step.top_ops(events, steps=2, on_gpu=True, top=5)
    assert ops == [
        {"name": "sm90_xmma_gemm_bf16", "self_ms_per_step": 0.15, "share": 0.75, "calls_per_step": 2},
        {"name": "triton_poi_fused_add", "self_ms_per_step": 0.05, "share": 0.25, "calls_per_step": 1},
    ]
    assert [op["name"] for op in bench_step.top_ops(events, 1, on_gpu=False, top=2)] == ["aten::mm", "sm90_xmma_gemm_bf16"]


def test_quick_data_benchmark_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "data.json"
    assert bench_data.main(["--quick", "--gpu-seq-per-s", "3500", "--tmp-dir", str(tmp_path),
                            "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "samples/s per worker" in text and "num_workers >=" in text and "--gpu-seq-per-s" in text
    report = json.loads(out.read_text())
    assert [(r["loader"], r["workers"]) for r in report["data"]["loaders"]] == [
        ("OriginalDataset (lists)", 0), ("PretrainingDataset", 0), ("PretrainingDataset", 1)]
    assert report["data"]["num_samples"] == 2000 and report["data"]["lists_rss_mib"] >= 0
    assert list(tmp_path.iterdir()) == [out]  # the shard's folder is gone


def test_a_script_runs_as_a_file():
    """``python benchmarks/bench_step.py`` finds ``common`` beside it and the installed package
    (bench_data.py imports them the same way; one subprocess is enough: each costs seconds)."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_step.py"), "--help"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "--quick" in done.stdout, done.stderr


def test_a_row_that_runs_out_of_gpu_memory_is_skipped_and_recorded(tmp_path, capsys, one_thread, monkeypatch):
    """The original at T=512 needs ~14 GB: on a 16 GB card its row is skipped, not the whole table."""
    real = bench_step.run_variant

    def original_runs_out(variant, *args, **kwargs):
        if variant.original:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(variant, *args, **kwargs)

    monkeypatch.setattr(bench_step, "run_variant", original_runs_out)
    out = tmp_path / "step.json"
    assert bench_step.main(["--quick", "--device", "cpu", "--threads", "1", "--variants", "original,project",
                            "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "original T=32 batch=4: out of GPU memory, row skipped (try a smaller --original-batch-size)" in text
    report = json.loads(out.read_text())
    assert [r["variant"] for r in report["model"]] == ["project"]
    assert report["skipped"] == [{"variant": "original", "seq_len": 32, "batch_size": 4, "why": "out of memory"}]


# --- the GPU script ---------------------------------------------------------------------------

GPU_CHECK = BENCHMARKS.parent / "scripts" / "gpu_check.sh"


def test_the_gpu_script_parses_and_fits_a_lease():
    """Every step under its own timeout, all of them within the 15-minute lease; at most five
    variants at T=128 and two at T=512, each one a variant bench_step knows."""
    assert subprocess.run(["bash", "-n", str(GPU_CHECK)], check=False).returncode == 0
    text = GPU_CHECK.read_text()
    import re

    steps = re.findall(r"^run_step (\S+) (\d+) ", text, flags=re.MULTILINE)
    assert [name for name, _ in steps] == ["cuda-tests", "shards-512", "t128-batch128",
                                           "t128-batch256", "t512-batch32"]
    assert sum(int(seconds) for _, seconds in steps) <= 12 * 60  # the worst case, not the expected ~8 min
    assert 'timeout --kill-after=15 "$seconds" "$@"' in text  # run_step's one way to run a step
    (every_switch,) = re.findall(r"^all=(\S+)", text, flags=re.MULTILINE)
    found = re.findall(r'--variants "\$\(no_compile ([\w+,$]+)\)', text.replace("$all", every_switch))
    variants = dict(zip([n for n, _ in steps[2:]], found, strict=True))
    specs = {name: value.split(",") for name, value in variants.items()}
    assert sum(len(v) for name, v in specs.items() if name.startswith("t128")) <= 5
    assert len(specs["t512-batch32"]) <= 2
    for spec in (s for v in specs.values() for s in v):
        bench_step.parse_variant(spec)
    assert "--trainer-steps" in text and "--profile" in text and "data_samples/train" in text


@pytest.mark.slow
def test_the_gpu_script_runs_every_command_on_a_cpu(tmp_path):
    """``--cpu-quick``: the same steps in --quick form (no compilation); about a minute."""
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_RECORDS": str(tmp_path)}
    done = subprocess.run(["bash", str(GPU_CHECK), "--cpu-quick"], capture_output=True, text=True,
                          timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (record_path,) = tmp_path.glob("gpu-check_*_cpu-quick.json")
    assert record_path.with_suffix(".txt").is_file()
    record = json.loads(record_path.read_text())
    assert [(s["name"], s["rc"]) for s in record["steps"]] == [
        ("cuda-tests", 0), ("shards-512", 0), ("t128-batch128", 0), ("t128-batch256", 0), ("t512-batch32", 0)]
    assert record["tests"]["failures"] == record["tests"]["errors"] == 0 and record["failed_steps"] == []
    benchmarks = record["benchmarks"]
    every_switch = "project+qkv+halfln+foldclip+unpad+fused"  # compiled on a GPU
    assert [r["variant"] for r in benchmarks["t128-batch128"]["model"]] == ["original", every_switch]
    assert [r["variant"] for r in benchmarks["t128-batch256"]["model"]] == ["project", every_switch, every_switch]
    assert [r["attn"] for r in benchmarks["t512-batch32"]["model"]] == ["sdpa", "unpad+sdpa"]
    for report in benchmarks.values():
        assert all(r["padding_share"] > 0 and "real_token_mfu" in r for r in report["model"])
    assert {r["seq_len"] for r in benchmarks["t512-batch32"]["model"]} == {512}
    assert record["best_t128"]["profile"] and record["trainer"]["steps"] == 6
