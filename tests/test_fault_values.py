"""Fault suite, items 5-7 of issue 13: bad values, named errors, full and read-only disks.

Every value is checked before anything is written (item 5), values that would train
silently wrong are refused (item 6), and each mistake of item 7 ends in a message
that names the flag or the file instead of a traceback from deep inside torch.
A full or read-only disk is made for real in a private mount namespace (``unshare``,
no root needed where user namespaces are allowed) and skipped where that is not
possible; the same paths are also covered in process by simulating the failure.
"""

from __future__ import annotations

import errno
import math
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_kill_resume import command
from tiny import tiny_config, tiny_data

from bert_tutorial import safe_io
from bert_tutorial.config import ConfigError, TrainConfig
from bert_tutorial.core.data import PretrainingDataset
from bert_tutorial.hdf5_format import ShardError
from bert_tutorial.pretrain import checkpoint as ckpt
from bert_tutorial.pretrain import trainer as training
from bert_tutorial.pretrain.cli import error_message, main
from bert_tutorial.pretrain.launch import config_args
from bert_tutorial.pretrain.trainer import Trainer
from bert_tutorial.safe_io import DiskFullError

REPO = Path(__file__).resolve().parent.parent


# --- 5. every value is checked before anything is written -------------------------------------


@pytest.mark.parametrize(("field", "value", "flag"), [
    ("hidden_size", 33, r"--hidden-size \(hidden_size\) must be a multiple of --num-attention-heads"),
    ("epochs", 0, r"--epochs \(epochs\) must be an integer >= 1, got 0"),
    ("warmup_fraction", 1.5, r"--warmup-fraction \(warmup_fraction\) must be in \[0, 1\), got 1.5"),
    ("dropout", 2.0, r"--dropout \(dropout\) must be in \[0, 1\), got 2.0"),
    ("seed", -1, r"--seed \(seed\) must be an integer >= 0 and <= \d+, got -1"),
])
def test_fault_05_a_bad_value_is_refused_before_anything_is_written(tmp_path, field, value, flag):
    with pytest.raises(ConfigError, match=flag):
        Trainer(tiny_config(tmp_path, **{field: value}))
    assert not (tmp_path / "run").exists()  # so the corrected command is not "a different run"
    if field == "hidden_size":
        assert Trainer(tiny_config(tmp_path, hidden_size=32)).progress.step == 0


def test_fault_05_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as refused:
        TrainConfig(batch_size=0, epochs=0, learning_rate=-1.0, adam_betas=(0.9, 1.5)).validate()
    lines = str(refused.value).splitlines()
    assert lines[0] == "invalid training configuration:" and len(lines) == 5
    TrainConfig().validate()
    TrainConfig.full().validate()


# --- 6. values that would train silently wrong ------------------------------------------------


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-grad-norm", "-1"], r"--max-grad-norm \(max_grad_norm\) must be > 0, or None for no clipping, got -1.0"),
    (["--max-grad-norm", "0"], r"--max-grad-norm \(max_grad_norm\) must be > 0"),
    (["--learning-rate", "0"], r"--learning-rate \(learning_rate\) must be > 0, or None for the default"),
    (["--eval-max-batches", "0"], r"--eval-max-batches \(eval_max_batches\) must be an integer >= 1, or None for the whole eval set, got 0"),
])
def test_fault_06_values_that_train_silently_wrong_are_refused(tmp_path, capsys, flags, message):
    assert main([*flags, "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid training configuration:") and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("norm", [None, math.inf])
def test_fault_06_no_clipping_is_asked_for_with_none_or_inf(tmp_path, monkeypatch, norm):
    seen = []
    real_step = training.train_step

    def recording(*args, **kwargs):
        seen.append(kwargs["max_grad_norm"])
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", recording)
    Trainer(tiny_config(tmp_path, epochs=1, max_steps=1, max_grad_norm=norm, eval_data=None)).fit()
    assert seen == [math.inf]


# --- 7. named errors instead of tracebacks ----------------------------------------------------


@pytest.mark.parametrize(("flags", "flag"), [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-8"], "--batch-size"),
    (["--grad-accum-steps", "0"], "--grad-accum-steps"),
    (["--log-every-steps", "0"], "--log-every-steps"),
    (["--seed", "-1"], "--seed"),
    (["--max-steps", "0"], "--max-steps"),
])
def test_fault_07_bad_counts_name_the_flag(tmp_path, capsys, flags, flag):
    assert main([*flags, "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{flag} (" in err and "must be an integer" in err and "Traceback" not in err


def test_fault_07_shards_longer_than_the_model_positions_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train_0.hdf5: sequences of length 16 do not fit the model's "
                                          r"max_position_embeddings 8 \(--max-position-embeddings\)"):
        Trainer(tiny_config(tmp_path, max_position_embeddings=8))
    assert not (tmp_path / "run").exists()
    small = tiny_config(tmp_path / "model", max_position_embeddings=8)  # a pretrained model too
    from bert_tutorial.core.model import build_model
    build_model(small, 50).save_pretrained(tmp_path / "small-model")
    cfg = tiny_config(tmp_path, model_name_or_path=str(tmp_path / "small-model"))
    with pytest.raises(ConfigError, match="max_position_embeddings 8"):
        Trainer(cfg)
    assert [p.name for p in (tmp_path / "run").iterdir()] == [".lock"]  # nothing recorded


def test_fault_07_sequence_length_zero_is_named(shard_factory):
    empty = np.zeros((8, 0), np.int32)
    path = shard_factory(input_ids=empty, input_mask=empty, segment_ids=empty)
    with pytest.raises(ShardError, match=r"shard.hdf5: field 'input_ids' has sequence length 0"):
        PretrainingDataset(path)


def test_fault_07_output_dir_that_is_a_file_is_named(tmp_path, capsys):
    data = tiny_data(tmp_path / "data")
    (tmp_path / "run").write_text("not a folder")
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in data.items()]
    assert main([*argv, "--output-dir", str(tmp_path / "run"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "run: output_dir is a file, not a folder" in err and "Traceback" not in err


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),  # torch
    OSError(errno.ENOSPC, "No space left on device"),
])
def test_fault_07_disk_full_while_saving_names_the_intact_checkpoint(tmp_path, monkeypatch, failure):
    trainer = Trainer(tiny_config(tmp_path, epochs=1))
    previous = trainer.save()
    trainer.progress.step = 1

    def no_room(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "save", no_room)
    monkeypatch.setattr(safe_io.shutil, "disk_usage", lambda p: types.SimpleNamespace(free=0))
    with pytest.raises(DiskFullError, match=rf"no space left while writing .*checkpoint-00000001; the "
                                            rf"previous checkpoint {previous} is intact"):
        trainer.save()
    assert ckpt.list_checkpoints(tmp_path / "run") == [previous]
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


def test_fault_07_disk_full_is_recognised_in_each_disguise(tmp_path, monkeypatch):
    assert safe_io.is_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert safe_io.is_disk_full(RuntimeError("I/O error: No space left on device (os error 28)"), tmp_path)
    # torch's writer says neither: only a file system without room left makes it "disk full"
    torch_says = RuntimeError("unexpected pos 704 vs 598")
    for free, full in ((10**9, False), (safe_io.FULL_BELOW_BYTES - 1, True)):
        monkeypatch.setattr(safe_io.shutil, "disk_usage",
                            lambda p, free=free: types.SimpleNamespace(free=free))
        assert safe_io.is_disk_full(torch_says, tmp_path) == full
        assert not safe_io.is_disk_full(ValueError("a bug, not a disk"), tmp_path)


FILE_SIZE_LIMIT = """
import pathlib, resource, sys
from bert_tutorial.safe_io import DiskFullError, write_text_atomic
target = pathlib.Path(sys.argv[1])
target.write_text("old")
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # ulimit -f: writes past 4 KB fail (EFBIG)
try:
    write_text_atomic(target, "x" * 100_000)
except DiskFullError as err:
    print("DiskFullError:", err)
print("kept:", target.read_text())
"""


def test_fault_07_a_file_size_limit_is_named_and_the_old_file_kept(tmp_path):
    target = tmp_path / "metrics.jsonl"
    out = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(target)], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert (f"DiskFullError: the file size limit was reached while writing {target}; its previous "
            "version is intact: raise the limit (ulimit -f), or write to a file system that allows "
            "larger files, and run the same command again") in out.stdout
    assert "kept: old" in out.stdout and not list(tmp_path.glob(".*.tmp-*"))


def test_fault_07_a_file_size_limit_while_saving_a_checkpoint_is_named(tmp_path):
    """safetensors says "File too large (os error 27)", torch.save only "unexpected pos"."""
    cfg = tiny_config(tmp_path, save_every_steps=2, max_steps=4)
    limit = "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000)); "
    run = f"{limit}from bert_tutorial.pretrain.cli import main; raise SystemExit(main({config_args(cfg)!r}))"
    out = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 1, out.stderr
    assert "error: the file size limit was reached while writing" in out.stderr, out.stderr
    assert "checkpoint-00000002" in out.stderr and "Traceback" not in out.stderr
    assert not list((Path(cfg.output_dir) / "checkpoints").glob(".*"))  # no temporary folder left


def test_fault_18_a_full_disk_while_drawing_the_curves_is_named_and_the_old_figure_kept(tmp_path, monkeypatch):
    """Was: an OSError traceback from the image writer and a truncated loss_curves.png."""
    cfg = tiny_config(tmp_path, plots=True, max_steps=2)
    limit = "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (120_000, 120_000)); "
    run = f"{limit}from bert_tutorial.pretrain.cli import main; raise SystemExit(main({config_args(cfg)!r}))"
    out = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    figure = Path(cfg.output_dir) / "loss_curves.png"  # about 170 KB: the step-0 figure fails
    assert out.returncode == 1, out.stderr
    assert (f"error: the file size limit was reached while writing {figure}; its previous version "
            "is intact: raise the limit (ulimit -f)") in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in Path(cfg.output_dir).iterdir()) == [
        ".lock", "data.json", "metrics.jsonl", "train_config.json"]  # no PNG, whole or cut

    from bert_tutorial.pretrain import curves

    figure.write_bytes(b"the previous figure")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safe_io.os, "fsync", full)
    with pytest.raises(DiskFullError, match=r"no space left while writing .*loss_curves.png; its "
                                            r"previous version is intact"):
        curves.save_training_plots(cfg.output_dir)
    monkeypatch.undo()
    assert figure.read_bytes() == b"the previous figure" and not list(figure.parent.glob(".*.tmp-*"))


class _BrokenShard(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        raise ShardError("shard_0.hdf5: masked_lm_positions[3] points at padding (field masked_lm_positions)")


def test_fault_08_an_error_raised_in_a_loader_worker_prints_as_its_own_message():
    """torch re-raises a worker's error with the worker's traceback as its message."""
    with pytest.raises(ShardError) as raised:
        next(iter(torch.utils.data.DataLoader(_BrokenShard(), num_workers=1)))
    assert str(raised.value).startswith("Caught ShardError in DataLoader worker process 0")
    assert error_message(raised.value) == (
        "shard_0.hdf5: masked_lm_positions[3] points at padding (field masked_lm_positions)")
    assert error_message(ShardError("plain message")) == "plain message"
    assert error_message(ShardError("Caught you: not from a worker")) == "Caught you: not from a worker"


class _BrokenShardManyLines(_BrokenShard):
    def __getitem__(self, index: int):
        raise ShardError("shard_0.hdf5: 2 rows are wrong:\n  row 3\n  row 9")


def test_fault_08_a_multi_line_error_from_a_worker_keeps_all_its_lines():
    with pytest.raises(ShardError) as raised:
        next(iter(torch.utils.data.DataLoader(_BrokenShardManyLines(), num_workers=1)))
    assert error_message(raised.value) == "shard_0.hdf5: 2 rows are wrong:\n  row 3\n  row 9"


# --- 7, for real: a full and a read-only file system in a private mount namespace -------------


def private_mount(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) as root of a user + mount namespace: it may mount a tmpfs."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unprivileged user/mount namespaces are not available here")
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_fault_07_disk_full_for_real_stops_with_a_named_error_and_loses_nothing(tmp_path):
    data = tiny_data(tmp_path / "data")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run = mnt / "run"
    cmd = " ".join([*command(data, run), "--save-every-steps", "0"])  # a checkpoint per epoch
    check = (f"{sys.executable} -c \"from bert_tutorial.pretrain.checkpoint import newest_verified_checkpoint"
             f" as n; print('verified', n('{run}'))\"")
    script = f"""
        mount -t tmpfs -o size=4m tmpfs {mnt}
        {cmd} > {tmp_path}/out.txt 2> {tmp_path}/err.txt & pid=$!
        while [ ! -e {run}/checkpoints/checkpoint-00000008 ] && kill -0 $pid 2>/dev/null; do sleep 0.02; done
        kill -STOP $pid; dd if=/dev/zero of={mnt}/fill bs=64k 2>/dev/null; kill -CONT $pid
        wait $pid; echo "rc=$?"
        rm {mnt}/fill; ls -a {run}/checkpoints; {check}
    """
    result = private_mount(script, REPO)
    err = (tmp_path / "err.txt").read_text()
    assert "rc=1" in result.stdout, (result.stdout, result.stderr, err)
    assert "Traceback" not in err and "basic_ios" not in err
    assert re.search(
        r"error: no space left while writing .*(previous checkpoint .*checkpoint-\d{8} is intact|"
        r"metrics.jsonl; the checkpoints are intact)", err), err
    assert "verified (PosixPath(" in result.stdout and ", [])" in result.stdout, result.stdout
    assert ".tmp-" not in result.stdout  # the failed save left nothing behind


@pytest.mark.slow
def test_fault_07_read_only_output_folder_is_named(tmp_path):
    data = tiny_data(tmp_path / "data")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cmd = " ".join(command(data, mnt / "run"))
    script = f"""
        mount -t tmpfs tmpfs {mnt} && mkdir {mnt}/run && mount -o remount,ro {mnt}
        {cmd}; echo "rc=$?"
        {cmd.replace(str(mnt / 'run'), str(mnt / 'new-run'))}; echo "rc=$?"
    """
    result = private_mount(script, REPO)
    assert result.stdout.count("rc=1") == 2, (result.stdout, result.stderr)
    assert result.stderr.count("cannot write into the output folder (Read-only file system); "
                               "choose a writable --output-dir") == 2, result.stderr
    assert "Traceback" not in result.stderr
