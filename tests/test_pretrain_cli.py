"""`python -m bert_tutorial.pretrain`: flags map onto TrainConfig; the real job learns."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from bert_tutorial.config import DATA_SAMPLES, REPO_ROOT, TrainConfig
from bert_tutorial.create_data.corpus import gutenberg_to_documents
from bert_tutorial.pretrain.cli import config_from_args, main
from bert_tutorial.pretrain.metrics import read_metrics


def test_no_arguments_is_the_default_config():
    assert config_from_args([]) == TrainConfig()


def test_flags_map_onto_config_fields():
    cfg = config_from_args([
        "--batch-size", "8", "--no-sparse-mlm-head", "--eval-data", "none", "--max-steps", "5",
        "--learning-rate", "3e-4", "--adam-betas", "0.9", "0.98", "--precision", "fp32",
    ])
    assert cfg.batch_size == 8 and cfg.sparse_mlm_head is False and cfg.eval_data is None
    assert cfg.max_steps == 5 and cfg.lr == 3e-4 and cfg.adam_betas == (0.9, 0.98)
    assert config_from_args(["--full"]).model_name_or_path == "bert-base-uncased"
    with pytest.raises(SystemExit):
        config_from_args(["--no-such-flag"])


def test_help_explains_the_flags_from_the_config_comments(capsys):
    with pytest.raises(SystemExit):
        config_from_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--learning-rate LEARNING_RATE Peak learning rate; None = 1e-4 when continuing" in text
    assert 'None ("none" on the command line) = no evaluation' in text
    assert "--precision {auto,fp32,bf16,fp16}" in text and "``" not in text
    with pytest.raises(SystemExit):
        config_from_args(["--precision", "fp8"])  # a named choice, not a failure at run time
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_on_sample_data_eval_accuracy_rises(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--output-dir", str(out), "--max-steps", "40", "--batch-size", "16",
                 "--log-every-steps", "20", "--eval-max-batches", "4", "--no-plots"]) == 0
    assert "Final eval:" in capsys.readouterr().out
    evals = [r for r in read_metrics(out) if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [0, 40]
    assert evals[-1]["mlm_accuracy"] > evals[0]["mlm_accuracy"] + 0.03
    assert evals[-1]["mlm_loss"] < evals[0]["mlm_loss"] - 1.0
    assert (out / "checkpoints" / "checkpoint-00000040" / "model.safetensors").exists()
    assert str(DATA_SAMPLES / "train") == TrainConfig().train_data  # the defaults point here


def test_dry_run_builds_the_run_and_does_not_train(tmp_path, capsys):
    from tiny import tiny_config

    from bert_tutorial.pretrain.cli import main
    from bert_tutorial.pretrain.launch import config_args

    args = config_args(tiny_config(tmp_path), only_changed=False)
    # "--dry" too: argparse takes an unambiguous prefix, so a run must not start for it.
    for run in (lambda: main([*args, "--dry-run"]), lambda: main([*args, "--dry"]),
                lambda: main(args, do_train=False)):
        assert run() == 0
        out = capsys.readouterr().out
        assert "16 optimizer steps" in out and "Final eval" not in out
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained, nothing saved


@pytest.mark.slow
def test_the_readme_your_own_text_commands_make_shards_and_a_run_that_starts(tmp_path):
    """The README's "Your own text" commands as a reader copies them, on chapters of the book.

    Only the hub model is swapped for the local starting model (no network here), and the
    training command stops before its first step (``--dry-run``)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Your own text", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line) for line in block.replace("\\\n", " ").splitlines()
                if line.startswith("python -m ")]
    assert [c[2] for c in commands] == ["bert_tutorial.create_data"] * 2 + ["bert_tutorial.pretrain"]

    chapters = gutenberg_to_documents(
        (DATA_SAMPLES / "corpus" / "pride-and-prejudice.txt").read_text(encoding="utf-8"))
    for folder, part in (("my_corpus", chapters[:12]), ("my_heldout", chapters[55:])):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "text.txt").write_text(
            "\n\n".join("\n".join(sentences) for sentences in part) + "\n", encoding="utf-8")
    (tmp_path / "data_samples").symlink_to(DATA_SAMPLES)  # the commands run from the repository root

    commands[2] = [str(DATA_SAMPLES / "base-model") if a == "bert-base-uncased" else a for a in commands[2]]
    for command in commands[:2] + [[*commands[2], "--device", "cpu", "--dry-run"]]:
        done = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{shlex.join(command)}\n{done.stderr[-3000:]}"
    assert "optimizer steps -> runs/mine" in done.stdout
    assert list((tmp_path / "my_shards" / "eval").glob("eval*.hdf5"))


def test_full_is_the_measured_fast_path_with_a_global_batch_of_256():
    """compile (on CUDA), loader workers, micro-batch 256 at T <= 128 and 32 x 8 beyond."""
    for t, split in ((128, (256, 1)), (64, (256, 1)), (512, (32, 8)), (256, (32, 8)), (None, (32, 8))):
        cfg = TrainConfig.full(t)
        assert (cfg.batch_size, cfg.grad_accum_steps) == split, t
        assert cfg.batch_size * cfg.grad_accum_steps == 256
        assert cfg.compile is None and cfg.num_workers >= 1
        cfg.validate()
    # Overrides win over the rule, as for every other field.
    cfg = TrainConfig.full(128, batch_size=128, grad_accum_steps=2, compile=False)
    assert (cfg.batch_size, cfg.grad_accum_steps, cfg.compile) == (128, 2, False)


def test_full_flag_reads_the_sequence_length_from_the_train_shards(tmp_path):
    from shards import make_shard

    # data_samples/train is T=128: the fast split.
    cfg = config_from_args(["--full"])
    assert (cfg.batch_size, cfg.grad_accum_steps, cfg.compile) == (256, 1, None)
    (tmp_path / "long").mkdir()
    make_shard(tmp_path / "long" / "s.hdf5", num_samples=2, seq_length=512, max_predictions=80)
    cfg = config_from_args(["--full", "--train-data", str(tmp_path / "long")])
    assert (cfg.batch_size, cfg.grad_accum_steps) == (32, 8)
    # Unreadable shards: the split that fits any T (the Trainer reports the shards' fault).
    cfg = config_from_args(["--full", "--train-data", str(tmp_path / "missing")])
    assert (cfg.batch_size, cfg.grad_accum_steps) == (32, 8)
    cfg = config_from_args(["--full", "--batch-size", "16", "--no-compile"])
    assert (cfg.batch_size, cfg.grad_accum_steps, cfg.compile) == (16, 1, False)


def test_full_help_says_how_the_batch_is_split_and_where_it_compiles(capsys):
    with pytest.raises(SystemExit):
        config_from_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "256 x 1 at T <= 128, 32 x 8 at longer T" in text
    assert "--full --device cpu runs uncompiled" in text


def test_a_full_run_on_a_cpu_is_not_compiled(tmp_path):
    """compile=None (full's) compiles on CUDA only: a CPU run with --full overrides starts at once."""
    from tiny import tiny_config

    from bert_tutorial.pretrain.trainer import Trainer

    trainer = Trainer(tiny_config(tmp_path, compile=None))
    assert trainer.compiled is False and trainer.model is trainer.module
    with pytest.raises(ValueError, match="--compile"):
        TrainConfig(compile="yes").validate()


def test_compile_none_has_a_flag_so_launch_can_reproduce_full():
    """compile=None (full's) differs from the default False: "--compile none" says it."""
    from bert_tutorial.pretrain.launch import config_args

    assert config_from_args(["--compile", "none"]).compile is None
    assert config_from_args(["--compile"]).compile is True
    assert config_from_args(["--no-compile"]).compile is False
    for cfg in (TrainConfig.full(128), TrainConfig.full(512, compile=True),
                TrainConfig(compile=None, fused_adamw=False)):
        assert config_from_args(config_args(cfg)) == cfg
    for bad in (["--compile", "yes"], ["--no-compile", "none"]):
        with pytest.raises(SystemExit):
            config_from_args(bad)
