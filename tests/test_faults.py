"""The fault suite: each numbered case of issue 13 (and docs/faults.md) has a test here.

Items 5-7 (bad values, named errors, full or read-only disks) are in
``test_fault_values.py``, item 8 (shard values) in ``test_data.py``. Crash and
preemption use real training processes (subprocesses, CPU); the rest run the Trainer
in this process on copies of one finished tiny run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fault_kill_resume import command, final_state, kill_resume_cycles
from safetensors.torch import load_file
from shards import make_shard
from tiny import fit_killed_in_step, tiny_config, tiny_data

from bert_tutorial.config import TrainConfig
from bert_tutorial.hdf5_format import inspect_shard, read_shard, write_shard
from bert_tutorial.pretrain import checkpoint as ckpt
from bert_tutorial.pretrain import trainer as training
from bert_tutorial.pretrain.cli import main
from bert_tutorial.pretrain.launch import config_args
from bert_tutorial.pretrain.metrics import read_metrics
from bert_tutorial.pretrain.run_dir import DataChangedError, RunDirError, RunLockedError
from bert_tutorial.pretrain.signals import GRACE_S, StopNow, stop_signals
from bert_tutorial.pretrain.trainer import Trainer
from bert_tutorial.safe_io import DiskFullError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> TrainConfig:
    """One finished tiny run: 8 steps, checkpoints at steps 4 and 8."""
    cfg = tiny_config(tmp_path_factory.mktemp("finished"), epochs=1, save_every_steps=4)
    Trainer(cfg).fit()
    return cfg


def copy_of(finished: TrainConfig, tmp_path: Path, **overrides) -> TrainConfig:
    """A copy of the finished run's folder, and its config pointing there."""
    out = tmp_path / "run"
    shutil.copytree(finished.output_dir, out)
    return TrainConfig.from_dict(finished.to_dict() | {"output_dir": str(out), **overrides})


def snapshot(run: Path) -> dict[Path, int]:
    """Modification times of a run's files (not the lock, which any attempt takes briefly)."""
    return {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != ".lock"}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model.safetensors")


def train_steps(run: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run) if r["kind"] == "train"]


# --- 1. checkpoints or metrics without train_config.json -------------------------------------


def test_fault_01_checkpoints_without_train_config_are_refused_never_reused(finished, tmp_path):
    cfg = copy_of(finished, tmp_path, seed=1)
    run = Path(cfg.output_dir)
    (run / "train_config.json").unlink()
    before = snapshot(run)
    copy = r"a copy is in .*checkpoint-00000008/train_config.json"
    with pytest.raises(RunDirError, match=rf"holds checkpoints or metrics but no train_config.json.*{copy}"):
        Trainer(cfg)
    shutil.rmtree(run / "checkpoints")  # metrics alone are a run too
    with pytest.raises(RunDirError, match="no train_config.json"):
        Trainer(cfg)
    assert snapshot(run) == {p: t for p, t in before.items() if p.exists()}  # nothing touched


# --- 2. train_config.json written atomically; an unreadable one is named -----------------------


def test_fault_02_config_write_is_atomic_and_an_unreadable_config_is_named(finished, tmp_path, monkeypatch):
    cfg = copy_of(finished, tmp_path)
    config = Path(cfg.output_dir) / "train_config.json"
    original = config.read_bytes()

    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst).name == "train_config.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", full_disk)
        with pytest.raises(DiskFullError, match=r"no space left while writing .*train_config.json; its previous version is intact"):
            Trainer(cfg).fit()  # a resumed run records its config when it starts training
    assert config.read_bytes() == original and not list(config.parent.glob(".*.tmp-*"))

    config.write_bytes(original[: len(original) // 2])  # as an in-place write cut short left it
    with pytest.raises(RunDirError, match=r"train_config.json: unreadable .*a copy is in .*checkpoint-00000008"):
        Trainer(cfg)
    shutil.copy(ckpt.latest_checkpoint(cfg.output_dir) / "train_config.json", config)
    assert Trainer(cfg).progress.step == 8  # restored from the checkpoint's copy: resumes


# --- 3. SIGTERM to the process group (with workers), SIGINT, a second signal ------------------


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_is_bit_identical(tmp_path):
    kills = kill_resume_cycles(tmp_path, cycles=3, seed=7)
    assert len(kills) >= 2  # the run really was killed (and resumed) several times


# The run pauses until the test has done its part and touched the gate: inside optimizer step
# ``at`` (so a signal sent then always lands in that step, however fast or loaded the machine
# is; polling metrics.jsonl and signalling "soon" let a tiny run race past it), or with
# ``at`` = 0 before the run starts, every import done (so two runs reach the lock together).
PAUSED_RUN = """
import sys, time
from pathlib import Path
from bert_tutorial.pretrain import cli
from bert_tutorial.pretrain import trainer as training
at, gate, real_step, calls = int(sys.argv[1]), Path(sys.argv[2]), training.train_step, [0]
def wait_at_gate():
    print("paused", flush=True)
    deadline = time.monotonic() + 120
    while not gate.exists():  # a signal's handler runs in this loop, before the run goes on
        if time.monotonic() > deadline:
            sys.exit("paused run: no gate after 120 s")
        time.sleep(0.002)
def paused_step(*args, **kwargs):
    calls[0] += 1
    if calls[0] == at:
        wait_at_gate()
    return real_step(*args, **kwargs)
training.train_step = paused_step
if at == 0:
    wait_at_gate()
sys.exit(cli.main(sys.argv[3:]))
"""
CHILD_LIMIT_S = 300  # a child still running then is killed: the test fails instead of hanging CI


def paused_run(cmd: list[str], at: int, gate: Path) -> list[str]:
    """``cmd`` (``python -m bert_tutorial.pretrain ...``) as a run that pauses at ``at``."""
    assert cmd[1:3] == ["-m", "bert_tutorial.pretrain"], cmd
    return [sys.executable, "-c", PAUSED_RUN, str(at), str(gate), *cmd[3:]]


@contextlib.contextmanager
def children(commands: list[list[str]], logs: Path, **popen: Any) -> Iterator[list[subprocess.Popen]]:
    """Start ``commands`` (stdout piped, stderr to ``logs/err<i>.txt`` so it cannot fill a pipe
    while the test reads stdout); kill any that still run when the block ends, or after
    ``CHILD_LIMIT_S`` seconds, so a child that hangs never hangs the test run."""
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    watchdog = threading.Timer(CHILD_LIMIT_S, lambda: [p.kill() for p in procs if p.poll() is None])
    watchdog.start()
    try:
        for i, cmd in enumerate(commands):
            with open(logs / f"err{i}.txt", "w") as err:
                procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err,
                                              text=True, **popen))
        yield procs
    finally:
        watchdog.cancel()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def read_until(proc: subprocess.Popen, marker: str) -> list[str]:
    """The lines ``proc`` prints before ``marker``; fails if it ends (or is killed) first."""
    lines = []
    while line := proc.stdout.readline():
        if line.strip() == marker:
            return lines
        lines.append(line)
    raise AssertionError(f"the run ended (rc {proc.wait()}) before printing {marker!r}:\n{''.join(lines)}")


def stop_in_step(cmd: list[str], at: int, logs: Path, send: Callable[[subprocess.Popen], None],
                 **popen: Any) -> tuple[int, str, str]:
    """Run ``cmd`` (a pretrain command), pause it in its ``at``-th step, call ``send(proc)``."""
    gate = logs / "gate"
    with children([paused_run(cmd, at, gate)], logs, **popen) as (proc,):
        before = read_until(proc, "paused")  # what the run printed first (the step-0 eval, ...)
        send(proc)
        gate.touch()
        out = "".join(before) + proc.stdout.read()
        proc.wait()
    return proc.returncode, out, (logs / "err0.txt").read_text()


def stopped_at(out: str) -> int:
    return int(out.split("Stopped on request at step ")[1].split(";")[0])


@pytest.mark.slow
def test_fault_03_sigterm_to_the_process_group_and_sigint_save_and_resume(tmp_path):
    """Workers get the group's SIGTERM too; they ignore it, the run saves mid-epoch and resumes."""
    data = tiny_data(tmp_path / "data")
    reference, run = tmp_path / "reference", tmp_path / "run"
    short = ["--epochs", "3"]
    subprocess.run([*command(data, reference), *short], check=True, capture_output=True)
    cmd = [*command(data, run), *short, "--num-workers", "2", "--save-every-steps", "0"]

    # Its own process group, as under SLURM; the group's SIGTERM reaches the workers too.
    rc, out, err = stop_in_step(cmd, 5, tmp_path / "stop1",
                                lambda proc: os.killpg(proc.pid, signal.SIGTERM),
                                start_new_session=True)
    assert rc == 0 and "killed by signal" not in err, err
    assert stopped_at(out) == 5  # the step under way when the signal came is finished, then saved
    assert (ckpt.checkpoint_path(run, 5) / "manifest.json").exists()

    rc, out, err = stop_in_step(cmd, 6, tmp_path / "stop2",  # the 6th step of the resumed run
                                lambda proc: proc.send_signal(signal.SIGINT))
    assert rc == 0 and "SIGINT" in err and stopped_at(out) == 11, err  # Ctrl-C saves as well
    assert ckpt.checkpoint_path(run, 11).exists()

    subprocess.run(cmd, check=True, capture_output=True)  # the same command finishes the run
    assert final_state(run)[0] == final_state(reference)[0]  # every step once, same losses
    ref = weights(ckpt.latest_checkpoint(reference))
    assert all(torch.equal(ref[k], v) for k, v in weights(ckpt.latest_checkpoint(run)).items())


def test_fault_03_a_repeated_signal_counts_once_and_a_second_request_stops_at_once():
    requests = []
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # SIG_IGN in a background job
    with pytest.raises(StopNow) as stopped, stop_signals(requests.append):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered twice (process group + torchrun)
        time.sleep(0.05)
        assert requests == [signal.SIGTERM]  # one request: finish the step and save
        time.sleep(GRACE_S + 0.1)
        os.kill(os.getpid(), signal.SIGINT)  # a second request: stop now
        time.sleep(1)
    assert stopped.value.signum == signal.SIGINT and "stopped at once" in str(stopped.value)
    assert {sig: signal.getsignal(sig) for sig in before} == before  # handlers restored


def test_fault_03_second_signal_exits_with_the_signal_status(monkeypatch, tmp_path, capsys):
    from bert_tutorial.pretrain import cli

    def interrupted(cfg, do_train):
        raise StopNow(signal.SIGTERM)

    monkeypatch.setattr(cli, "_train", interrupted)
    assert cli.main(["--output-dir", str(tmp_path / "run")]) == 128 + signal.SIGTERM
    assert "SIGTERM received twice" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    data = tiny_data(tmp_path / "data")
    reference, preempted = tmp_path / "reference", tmp_path / "preempted"
    subprocess.run(command(data, reference), check=True, capture_output=True)

    # Checkpoints only at epoch ends (every 8 steps), so SIGTERM must save mid-epoch itself.
    cmd = [*command(data, preempted), "--save-every-steps", "0"]  # the last flag wins
    rc, out, err = stop_in_step(cmd, 6, tmp_path / "stop", lambda proc: proc.send_signal(signal.SIGTERM))
    assert rc == 0, err
    assert "Stopped on request at step" in out
    stopped_at = int(out.split("Stopped on request at step ")[1].split(";")[0])
    assert stopped_at == 6
    state_file = preempted / "checkpoints" / f"checkpoint-{stopped_at:08d}" / "training_state.pt"
    assert state_file.exists() and stopped_at % 8 != 0  # a mid-epoch checkpoint

    subprocess.run(cmd, check=True, capture_output=True)  # same command: resumes
    assert final_state(preempted)[0] == final_state(reference)[0]
    evals = [json.loads(line) for line in (preempted / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    assert len({e["step"] for e in evals}) == len(evals)  # no step evaluated twice


# --- 4. one folder, one run: the lock ---------------------------------------------------------


HOLD_LOCK = """
import sys, time
from pathlib import Path
from bert_tutorial.pretrain.run_dir import RunLock
RunLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_fault_04_a_locked_folder_names_the_holder_and_a_crash_releases_it(finished, tmp_path):
    cfg = copy_of(finished, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, cfg.output_dir], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by another run \(pid {holder.pid} on "):
            Trainer(cfg)
    finally:
        holder.kill()  # SIGKILL: no clean-up; the OS releases the lock
        holder.wait()
    assert Trainer(cfg).progress.step == 8


@pytest.mark.slow
def test_fault_04_two_runs_started_together_one_trains_one_is_refused(tmp_path):
    data = tiny_data(tmp_path / "data")
    run, gate = tmp_path / "run", tmp_path / "gate"
    # Both wait at the gate with every import done, so they reach the lock together: started
    # plainly, one could finish its few tiny steps before the other had imported torch, and
    # the late one would then (correctly) resume a finished run, which is not this case.
    script = paused_run([*command(data, run), "--epochs", "4"], 0, gate)
    with children([script, script], tmp_path / "logs") as procs:
        for proc in procs:
            read_until(proc, "paused")
        gate.touch()
        results = [(p.pid, p.stdout.read(), p.wait()) for p in procs]
    results = [(pid, out, (tmp_path / "logs" / f"err{i}.txt").read_text(), rc)
               for i, (pid, out, rc) in enumerate(results)]
    codes = sorted(rc for *_, rc in results)
    assert codes == [0, 1], results
    [(loser_pid, _, err, _)] = [r for r in results if r[3] == 1]
    [winner_pid] = [r[0] for r in results if r[3] == 0]
    assert f"in use by another run (pid {winner_pid} on " in err and "Traceback" not in err
    assert train_steps(run) == list(range(1, 33))  # no duplicate or backward steps


def test_fault_04_trainers_of_one_process_take_over_only_an_idle_folder(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, epochs=1, max_steps=2)
    idle = Trainer(cfg)
    active = Trainer(cfg)  # a notebook cell run twice: the new Trainer takes the folder over
    with pytest.raises(RunLockedError, match="a newer Trainer of this process"):
        idle.fit()
    real_step, refused = training.train_step, []

    def step_and_intrude(*args, **kwargs):
        try:
            Trainer(cfg)
        except RunLockedError as exc:
            refused.append(str(exc))
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", step_and_intrude)
    active.fit()
    assert len(refused) == 2 and "is training into it" in refused[0]


def test_fault_04_a_finished_trainers_loader_workers_do_not_hold_the_folder(tmp_path):
    # DataLoader workers are forked while the folder is locked and inherit the flock's
    # descriptor; persistent ones outlive fit() while the Trainer is referenced. They must
    # not keep the folder locked: notebook 05 creates a second Trainer to resume, and its
    # FULL_RUN (TrainConfig.full) has num_workers >= 1.
    cfg = tiny_config(tmp_path, epochs=1, max_steps=2, num_workers=1)
    finished = Trainer(cfg)
    assert finished.fit().steps == 2
    assert Trainer(cfg).fit().steps == 2  # was: "in use by another run (pid unknown)"
    del finished


# --- 9. resuming on other data ----------------------------------------------------------------


def test_fault_09_resume_on_changed_data_is_refused_unless_allowed(finished, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(Path(finished.train_data), moved)  # the same shards elsewhere: fine
    assert Trainer(copy_of(finished, tmp_path / "a", train_data=str(moved))).progress.step == 8

    make_shard(moved / "train_2.hdf5", num_samples=32, seq_length=16, max_predictions=4,
               vocab_size=50, seed=5)
    cfg = copy_of(finished, tmp_path / "b", train_data=str(moved))
    before = snapshot(Path(cfg.output_dir))
    with pytest.raises(DataChangedError, match=r"train shards added: train_2.hdf5.*--allow-data-change"):
        Trainer(cfg)
    assert snapshot(Path(cfg.output_dir)) == before
    cfg.allow_data_change = True
    with pytest.warns(UserWarning, match="resuming on changed data") as caught:
        trainer = Trainer(cfg)
    assert {w.filename for w in caught} == {__file__}  # the user's line, not the package's
    assert trainer.progress.step == 8 and trainer.total_steps == 12  # 96 samples / 8 per step
    assert snapshot(Path(cfg.output_dir)) == before  # built, not trained: the record is unchanged
    trainer.fit()
    recorded = json.loads((Path(cfg.output_dir) / "data.json").read_text())
    assert [s[0] for s in recorded["train"]["shards"]] == ["train_0.hdf5", "train_1.hdf5", "train_2.hdf5"]


def test_fault_09_a_dry_run_with_allow_data_change_changes_nothing(finished, tmp_path, capsys):
    """Checking a resume with --allow-data-change must not make the change permanent."""
    moved = tmp_path / "moved"
    shutil.copytree(Path(finished.train_data), moved)
    make_shard(moved / "train_2.hdf5", num_samples=32, seq_length=16, max_predictions=4,
               vocab_size=50, seed=5)
    cfg = copy_of(finished, tmp_path, train_data=str(moved))
    before = snapshot(Path(cfg.output_dir))
    with pytest.warns(UserWarning, match="resuming on changed data"):
        assert main([*config_args(cfg), "--allow-data-change", "--dry-run"]) == 0
    assert snapshot(Path(cfg.output_dir)) == before
    assert main([*config_args(cfg), "--dry-run"]) == 1  # still refused without the flag
    assert "train shards added: train_2.hdf5" in capsys.readouterr().err


def test_fault_09_less_data_than_the_run_has_used(finished, tmp_path, capsys):
    """--allow-data-change on fewer samples: a named error past the end, a new epoch mid-way."""
    few = tmp_path / "few"
    few.mkdir()
    shutil.copy(Path(finished.train_data) / "train_0.hdf5", few)  # 32 of the 64 samples
    cfg = copy_of(finished, tmp_path, train_data=str(few), allow_data_change=True)
    with pytest.warns(UserWarning, match="resuming on changed data"):
        assert main(config_args(cfg)) == 2  # at step 8 of a run that now has 4 steps
    assert "the run is at step 8, past the 4 steps the current data give" in capsys.readouterr().err


def test_fault_09_less_data_than_the_epoch_has_used_starts_the_next_epoch(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, epochs=2, save_every_steps=4)  # 8 steps of 8 samples per epoch
    fit_killed_in_step(monkeypatch, cfg, 6)  # lost in step 6: checkpoint 4, 32 samples into the epoch
    train = Path(cfg.train_data)
    (train / "train_1.hdf5").unlink()
    make_shard(train / "train_0.hdf5", num_samples=24, seq_length=16, max_predictions=4,
               vocab_size=50, seed=7)  # 24 samples now: fewer than the 32 this epoch has used
    cfg.allow_data_change = True
    with pytest.warns(UserWarning, match="resuming on changed data"):
        trainer = Trainer(cfg)
    assert (trainer.progress.step, trainer.progress.epoch, trainer.progress.epoch_samples) == (4, 1, 0)
    assert trainer.fit().steps == trainer.total_steps == 6  # 3 steps per epoch now


def test_fault_09_a_lost_data_record_is_not_a_free_pass(finished, tmp_path):
    """Without data.json the checkpoint's copy is compared; without both, refused unless allowed."""
    cfg = copy_of(finished, tmp_path)
    run = Path(cfg.output_dir)
    (run / "data.json").unlink()
    shutil.copy(Path(finished.train_data) / "train_0.hdf5", tmp_path / "extra.hdf5")
    moved = tmp_path / "moved"
    shutil.copytree(Path(finished.train_data), moved)
    shutil.copy(tmp_path / "extra.hdf5", moved / "train_9.hdf5")  # a shard added
    with pytest.raises(DataChangedError, match=r"train shards added: train_9.hdf5"):
        Trainer(TrainConfig.from_dict(cfg.to_dict() | {"train_data": str(moved)}))  # the copy caught it
    trainer = Trainer(cfg)
    assert trainer.progress.step == 8  # same data: resumes
    trainer.fit()  # a finished run: nothing to train, but the record is restored
    assert (run / "data.json").is_file()

    (run / "data.json").unlink()
    for checkpoint in ckpt.list_checkpoints(run):  # as if no checkpoint kept a copy either
        (checkpoint / "data.json").unlink()
        ckpt.write_manifest(checkpoint)
    before = snapshot(run)
    with pytest.raises(DataChangedError, match=r"data.json: missing, so the shards cannot be checked.*--allow-data-change"):
        Trainer(cfg)
    assert snapshot(run) == before
    cfg.allow_data_change = True
    with pytest.warns(UserWarning, match="data.json: missing; resuming with the current data unchecked"):
        trainer = Trainer(cfg)
    assert trainer.progress.step == 8
    trainer.fit()
    assert (run / "data.json").is_file()  # recorded again


@pytest.mark.parametrize("left", ["checkpoints, empty metrics", "metrics, no checkpoints"])
def test_fault_05_a_folder_that_holds_a_run_stays_tied_to_its_config(finished, tmp_path, left):
    cfg = copy_of(finished, tmp_path, seed=7)
    run = Path(cfg.output_dir)
    if left == "checkpoints, empty metrics":
        (run / "metrics.jsonl").write_text("")
    else:
        shutil.rmtree(run / "checkpoints")
    before = snapshot(run)
    with pytest.raises(RunDirError, match=r"output folder holds a different run \(fields \['seed'\] differ\)"):
        Trainer(cfg)
    assert snapshot(run) == before


def test_fault_05_a_dry_run_does_not_tie_the_folder_to_its_config(tmp_path, capsys):
    """Nothing was trained in a folder a --dry-run made: another config may start there."""
    cfg = tiny_config(tmp_path)
    assert main([*config_args(cfg), "--dry-run"]) == 0
    assert (Path(cfg.output_dir) / "train_config.json").is_file()
    Trainer(tiny_config(tmp_path, seed=7))  # not refused as "a different run"
    assert json.loads((Path(cfg.output_dir) / "train_config.json").read_text())["seed"] == 7


# --- 10. checkpoints that prove themselves ---------------------------------------------------


def truncate_weights(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty_config(folder: Path) -> None:
    (folder / "config.json").write_text("")


def flip_bytes(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a weight tensor: loads fine, wrong values
    path.write_bytes(bytes(data))


def half_copied_newer(folder: Path) -> None:
    newer = folder.with_name("checkpoint-00000012")
    newer.mkdir()
    for name in ("training_state.pt", "config.json"):  # the copy stopped before the weights
        shutil.copy(folder / name, newer / name)


@pytest.mark.parametrize("damage", [truncate_weights, empty_config, flip_bytes, half_copied_newer])
def test_fault_10_a_damaged_newest_checkpoint_falls_back_to_one_that_verifies(finished, tmp_path, damage):
    cfg = copy_of(finished, tmp_path)
    newest = ckpt.checkpoint_path(cfg.output_dir, 8)
    damage(newest)
    with pytest.warns(UserWarning, match="skipping damaged checkpoint") as caught:
        trainer = Trainer(cfg)
    assert {w.filename for w in caught} == {__file__}  # the user's line, not the package's
    expected = 8 if damage is half_copied_newer else 4
    assert trainer.progress.step == expected
    assert [p.name for p in ckpt.list_checkpoints(cfg.output_dir)][-1] == f"checkpoint-{expected:08d}"
    assert list((Path(cfg.output_dir) / "checkpoints").glob("rejected-checkpoint-*"))  # kept aside
    if damage is flip_bytes:  # nothing lost: steps 5-8 again give the very same weights
        trainer.fit()
        ref, again = weights(ckpt.checkpoint_path(finished.output_dir, 8)), weights(newest)
        assert all(torch.equal(ref[k], again[k]) for k in ref)


def test_fault_10_no_checkpoint_verifies_is_an_error_not_a_fresh_start(finished, tmp_path):
    cfg = copy_of(finished, tmp_path)
    for folder in ckpt.list_checkpoints(cfg.output_dir):
        truncate_weights(folder)
    before = snapshot(Path(cfg.output_dir))
    with pytest.raises(ckpt.CheckpointError, match=r"(?s)no checkpoint verifies.*checkpoint-00000008.*truncated"):
        Trainer(cfg)
    assert snapshot(Path(cfg.output_dir)) == before  # the metrics were not deleted


# --- 11. minor ------------------------------------------------------------------------------


def test_fault_11_a_pickle_with_code_is_refused_saying_what_and_why(tmp_path):
    torch.save({"progress": {"step": 1}, "hook": os.system}, tmp_path / "training_state.pt")
    with pytest.raises(ckpt.CheckpointError) as refused:
        ckpt.load_training_state(tmp_path)
    message = str(refused.value)
    assert "refused" in message and "system" in message and "can run code" in message
    assert "weights_only=False" not in message and refused.value.__cause__ is None
    (tmp_path / "training_state.pt").write_bytes(b"not a torch file")
    with pytest.raises(ckpt.CheckpointError, match="the file is damaged or not a torch.save file") as damaged:
        ckpt.load_training_state(tmp_path)
    assert "weights_only" not in str(damaged.value)


def test_fault_11_precision_may_change_on_resume(finished, tmp_path):
    trainer = Trainer(copy_of(finished, tmp_path, precision="fp32"))  # "auto" meant fp32 here
    assert trainer.progress.step == 8 and trainer.precision == "fp32"


# --- 13. checkpoints out of reach never restart a run over its history (issue 27) -----------


def test_fault_13_deleted_checkpoints_do_not_restart_the_run_over_its_history(finished, tmp_path, capsys):
    """Was: a silent restart from step 0 that cut metrics.jsonl (16 lines -> 6)."""
    cfg = copy_of(finished, tmp_path)
    run = Path(cfg.output_dir)
    shutil.rmtree(run / "checkpoints")
    before = snapshot(run)
    assert main([*config_args(cfg), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"metrics.jsonl: logs this run up to step 8, but .*checkpoints holds no checkpoint "
                     r"\(deleted, or on a disk that is not mounted\?\), though one was saved by step 4", err), err
    assert "Traceback" not in err and snapshot(run) == before
    (run / "checkpoints").mkdir()  # an empty folder in its place is no better
    with pytest.raises(RunDirError, match="logs this run up to step 8"):
        Trainer(cfg)

    # A run killed before its first checkpoint (at step 4) logged nothing that is lost: it starts over.
    metrics = run / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in read_metrics(metrics) if r["step"] <= 4))
    assert Trainer(cfg).progress.step == 0


def test_fault_13_checkpoints_on_a_disk_that_is_not_mounted_are_named(finished, tmp_path):
    """Was: a restart from step 0, a FileExistsError at the first save, and a gap in the log
    once the disk was back."""
    cfg = copy_of(finished, tmp_path)
    run = Path(cfg.output_dir)
    disk = tmp_path / "disk"
    disk.mkdir()
    (run / "checkpoints").rename(disk / "checkpoints")
    (run / "checkpoints").symlink_to(disk / "checkpoints")
    lines = (run / "metrics.jsonl").read_text()
    disk.rename(tmp_path / "unmounted")
    with pytest.raises(RunDirError, match=r"checkpoints: a symbolic link to .*disk/checkpoints, which "
                                          r"does not exist \(a disk that is not mounted\?\)"):
        Trainer(cfg)
    (tmp_path / "unmounted").rename(disk)  # mounted again: the run resumes where it was
    trainer = Trainer(cfg)
    assert trainer.progress.step == 8 and (run / "metrics.jsonl").read_text() == lines
    disk.rename(tmp_path / "unmounted")  # and gone again while the run trains
    trainer.progress.step = 9
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoints: cannot create the checkpoint's folder "
                                                   r"there \(File exists\): is it on a disk that is not mounted"):
        trainer.save()
    (run / "checkpoints").unlink()
    (run / "checkpoints").write_text("")
    with pytest.raises(RunDirError, match="checkpoints: not a folder"):
        Trainer(cfg)


# --- 14. a diverged run keeps a usable checkpoint and never ends as a success (issue 27) ------


def finite_weights(checkpoint: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in weights(checkpoint).values())


def test_fault_14_divergence_keeps_the_last_checkpoint_from_before_it(tmp_path, capsys):
    """Was: checkpoints 7 and 8 kept, both inside the NaN streak, and 6 (the last finite) pruned."""
    cfg = tiny_config(tmp_path, learning_rate=1000.0, save_every_steps=1, max_bad_steps=3)
    assert main(config_args(cfg)) == 1
    err = capsys.readouterr().err
    train = [r for r in read_metrics(cfg.output_dir) if r["kind"] == "train"]
    first_nan = next(r["step"] for r in train if not math.isfinite(r["loss"]))
    before = ckpt.checkpoint_path(cfg.output_dir, first_nan - 1)
    assert f"the newest checkpoint from before the non-finite steps is {before}" in err, err
    assert "\nerror: " in err and "Traceback" not in err
    kept = ckpt.list_checkpoints(cfg.output_dir)
    # that one and the newest (inside the streak; the step-8 evaluation stopped the run before
    # its save): keep_last 2 would have pruned it once the streak held two checkpoints
    assert kept == [before, ckpt.checkpoint_path(cfg.output_dir, first_nan)]
    assert not ckpt.is_healthy(kept[-1])
    assert all(finite_weights(c) for c in kept)
    ckpt.verify_checkpoint(before)


@pytest.mark.parametrize("eval_data", ["eval", None])
def test_fault_14_a_divergence_near_the_end_is_not_a_success(tmp_path, capsys, eval_data):
    """Was: exit 0 with NaN losses (a streak shorter than --max-bad-steps when the steps ran out)."""
    cfg = tiny_config(tmp_path, epochs=1, learning_rate=1000.0, max_bad_steps=5)
    if eval_data is None:
        cfg.eval_data = None
    assert main(config_args(cfg)) == 1
    err = capsys.readouterr().err
    expected = (r"evaluation at step 8: MLM loss nan" if eval_data else
                r"the run ended in a streak of 1 non-finite step\(s\) \(step 8\), fewer than "
                r"--max-bad-steps 5")
    assert re.search(expected, err) and "Traceback" not in err, err
    assert ckpt.list_checkpoints(cfg.output_dir) == []  # nothing diverged was saved as the end


def test_fault_14_weights_that_are_not_finite_are_never_saved(tmp_path, capsys):
    trainer = Trainer(tiny_config(tmp_path, epochs=1))
    with torch.no_grad():
        next(trainer.module.parameters())[0].fill_(float("nan"))
    with pytest.raises(training.NonFiniteLossError, match=r"step 0: the weights are no longer finite "
                                                          r"\(NaN or inf\), so no checkpoint was saved"):
        trainer.save()
    assert ckpt.list_checkpoints(trainer.output_dir) == []
    with pytest.raises(training.NonFiniteLossError, match=r"evaluation of the starting model: MLM loss "
                                                          r"nan.*are its weights finite"):
        trainer.fit()
    # An Adam epsilon that is 0 in fp32 (0/0 for weights without gradient) is refused up front.
    assert main(["--adam-eps", "1e-50", "--output-dir", str(tmp_path / "eps")]) == 2
    assert "--adam-eps (adam_eps) must be >= 1.18e-38" in capsys.readouterr().err


# --- 15. an output folder never lies inside another run's folder (issue 27) ------------------


def test_fault_15_an_output_folder_inside_or_around_a_run_is_refused(finished, tmp_path, capsys):
    """Was: --output-dir …/checkpoint-8 trained there and rewrote that checkpoint's config and
    data record; the parent run then rejected it and resumed from an older one."""
    cfg = copy_of(finished, tmp_path)
    run = Path(cfg.output_dir)
    before = snapshot(run)
    inside = {"checkpoint": ckpt.checkpoint_path(run, 8), "sub-folder": run / "sub",
              "beside the checkpoints": run / "checkpoints" / "new"}
    for where, folder in inside.items():
        assert main([*config_args(cfg), "--output-dir", str(folder)]) == 1, where
        err = capsys.readouterr().err
        expected = ("a checkpoint folder, not a run folder" if where == "checkpoint" else
                    f"lies inside the run folder {run.resolve()}")
        assert expected in err and "Traceback" not in err, (where, err)
    assert main([*config_args(cfg), "--output-dir", str(tmp_path)]) == 1  # around the run
    assert f"holds the run folder {run.resolve()}" in capsys.readouterr().err
    assert snapshot(run) == before and not (run / "sub").exists()
    assert Trainer(cfg).progress.step == 8  # the run itself resumes as before


# --- 16. files are validated before their values are used, whoever reads them first (issue 27) -


def test_fault_16_an_eval_label_beyond_the_vocabulary_is_named_before_the_baseline(tmp_path, capsys):
    """Was: an IndexError from the frequency baseline, which read the eval shards first."""
    import numpy as np

    cfg = tiny_config(tmp_path, epochs=1)
    shard = Path(cfg.eval_data) / "eval_0.hdf5"
    arrays = read_shard(inspect_shard(shard))
    row, slot = (int(i[0]) for i in np.nonzero(arrays["masked_lm_positions"]))
    arrays["masked_lm_ids"][row, slot] = 70  # the vocabulary has 50 tokens
    write_shard(shard, arrays)
    assert main(config_args(cfg)) == 1
    err = capsys.readouterr().err
    assert f"error: {shard}: field 'masked_lm_ids' has token id 70 >= vocab size 50" in err, err
    assert "Traceback" not in err


# --- 17. every line of metrics.jsonl is a record (issue 27) -----------------------------------


@pytest.mark.parametrize("line", ['{"kind": "note"}', "[1, 2]", '{"kind": "train", "step": "3"}'])
def test_fault_17_a_metrics_line_that_is_not_a_record_is_named(finished, tmp_path, capsys, line):
    """Was: KeyError: 'step' from resuming (the valid JSON passed the log's JSON check)."""
    cfg = copy_of(finished, tmp_path)
    metrics = Path(cfg.output_dir) / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + line + "\n")
    count = len(metrics.read_text().splitlines())
    before = snapshot(Path(cfg.output_dir))
    for args in (["--dry-run"], []):
        assert main([*config_args(cfg), *args]) == 1
        err = capsys.readouterr().err
        assert (f"metrics.jsonl: line {count} is not a record of this log (a JSON object with a "
                f'"kind" and a "step" >= 0): {line}; repair or remove that line') in err, err
        assert "Traceback" not in err and snapshot(Path(cfg.output_dir)) == before


# --- 19. smaller faults of issue 27 ------------------------------------------------------------


@pytest.mark.parametrize("split", ["eval", "train"])
def test_fault_19_a_shard_without_a_masked_token_is_refused(tmp_path, capsys, split):
    """Was: NaN eval metrics and exit 0; a training shard like it trained with MLM loss 0.0."""
    cfg = tiny_config(tmp_path, epochs=1)
    shard = Path(getattr(cfg, f"{split}_data")) / f"{split}_0.hdf5"
    arrays = read_shard(inspect_shard(shard))
    arrays["masked_lm_positions"][:] = 0
    arrays["masked_lm_ids"][:] = 0
    write_shard(shard, arrays)
    assert main(config_args(cfg)) == 1
    err = capsys.readouterr().err
    assert (f"error: {shard}: field 'masked_lm_positions' is 0 in every row: no token is masked" in err
            and "Traceback" not in err), err


@pytest.mark.parametrize("device", ["mps", "cuda:99"])
def test_fault_19_a_device_that_is_not_there_is_named(tmp_path, capsys, device):
    """Was: a traceback from inside torch."""
    cfg = tiny_config(tmp_path, device=device)
    assert main(config_args(cfg)) == 2
    err = capsys.readouterr().err
    assert re.search(rf"error: --device \(device\) {device}: (no \w+ device is available here|this "
                     r"machine has \d+ cuda device)", err) and "Traceback" not in err, err
    assert not Path(cfg.output_dir).exists()


@pytest.mark.parametrize("damage", ["truncated", "Git LFS pointer"])
def test_fault_19_a_starting_model_with_broken_weights_is_named(tmp_path, capsys, damage):
    """Was: safetensors' SafetensorError traceback."""
    from bert_tutorial.core.model import build_model

    model = tmp_path / "model"
    build_model(tiny_config(tmp_path / "m"), 50).save_pretrained(model)
    weights_file = model / "model.safetensors"
    if damage == "truncated":
        weights_file.write_bytes(weights_file.read_bytes()[:1000])
        expected = f"{model}: cannot load a model from it ("
    else:
        weights_file.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 +
                                "\nsize 123456\n")
        expected = f"{weights_file}: a Git LFS pointer (131 bytes), not the weights"
    assert main(config_args(tiny_config(tmp_path, model_name_or_path=str(model)))) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err


def test_fault_19_a_shard_replaced_while_in_use_is_named(tmp_path):
    """Was: an IndexError that named no file (the sampler's indices were the old file's)."""
    from bert_tutorial.core.data import PretrainingDataset
    from bert_tutorial.hdf5_format import ShardError

    shard = make_shard(tmp_path / "train_0.hdf5", num_samples=32, seq_length=16, max_predictions=4,
                       vocab_size=50)
    data = PretrainingDataset(shard, vocab_size=50)
    data[31]
    make_shard(shard, num_samples=8, seq_length=16, max_predictions=4, vocab_size=50)
    data.cached_shard = None  # as a new epoch (or a loader worker) reads the file again
    with pytest.raises(ShardError, match=r"train_0.hdf5: holds 8 rows of length 16 \(4 predictions\) "
                                         r"now, 32 of length 16 \(4\) when the data set was opened"):
        data[31]


def test_fault_19_sigterm_during_the_first_evaluation_stops_with_a_message(tmp_path, monkeypatch, capsys):
    """Was: exit 143 and no word (the handlers were installed after the step-0 evaluation)."""
    cfg = tiny_config(tmp_path, epochs=1)
    real_evaluate, calls = training.evaluate, []

    def signalled(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # lands while the starting model is evaluated
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate", signalled)
    assert main(config_args(cfg)) == 0
    out, err = capsys.readouterr()
    assert "SIGTERM: finishing the evaluation of the starting model, then stopping" in err, err
    assert "Stopped on request before the first step (nothing to save)" in out, out
    assert ckpt.list_checkpoints(cfg.output_dir) == []
    assert main(config_args(cfg)) == 0  # the same command starts it again and finishes
    evals = [r["step"] for r in read_metrics(cfg.output_dir) if r["kind"] == "eval"]
    assert evals == [0, 8]


def test_fault_19_the_default_learning_rate_given_explicitly_is_the_same_run(finished, tmp_path):
    """Was: refused as "a different run" (None was compared with 0.001)."""
    from bert_tutorial.pretrain.run_dir import config_differences

    assert finished.learning_rate == 1e-3  # the tiny run gave the default from-scratch rate
    assert Trainer(copy_of(finished, tmp_path, learning_rate=None)).progress.step == 8
    assert config_differences({"max_grad_norm": None}, {"max_grad_norm": math.inf}) == []
    assert config_differences({"learning_rate": None, "model_name_or_path": "m"},
                              {"learning_rate": 1e-3, "model_name_or_path": "m"}) == ["learning_rate"]


def test_fault_19_eval_data_that_are_training_data_warn(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1)
    cfg.eval_data = cfg.train_data
    with pytest.warns(UserWarning, match=r"2 of the 2 eval shard\(s\) are training shards \(train_0"
                                         r".hdf5, train_1.hdf5\): the evaluation measures how well the "
                                         "model remembers") as caught:
        Trainer(cfg)
    assert {w.filename for w in caught} == {__file__}


# --- found by attacking issue 27's changes as a user (2026-12-06) -----------------------------


def signal_in_step(n: int, step, sig: int):
    """``step`` that sends this process ``sig`` at the start of its n-th call."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), sig)
        return step(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGXCPU])
def test_cluster_signals_stop_and_save_like_sigterm(tmp_path, monkeypatch, capsys, sig):
    """SLURM's --signal=USR1@60, a closed terminal's SIGHUP, a CPU limit's SIGXCPU: each ended the
    run at once (their default action), without a checkpoint."""
    cfg = tiny_config(tmp_path, epochs=1)
    monkeypatch.setattr(training, "train_step", signal_in_step(3, training.train_step, sig))
    assert main(config_args(cfg)) == 0
    out, err = capsys.readouterr()
    assert f"{signal.Signals(sig).name}: finishing step 3" in err and "Stopped on request at step 3" in out
    assert ckpt.list_checkpoints(cfg.output_dir) == [ckpt.checkpoint_path(cfg.output_dir, 3)]


def test_a_signal_ignored_on_purpose_stays_ignored_and_loader_workers_ignore_them_all():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with stop_signals(lambda signum: None):
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_IGN, signal.SIG_DFL)
    finally:
        signal.signal(signal.SIGHUP, previous)
    check = ("import signal; from bert_tutorial.pretrain.signals import ignore_stop_signals; "
             "ignore_stop_signals(0); print([signal.getsignal(s) == signal.SIG_IGN for s in "
             "(signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGXCPU)])")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO,
                         check=True)
    assert out.stdout.strip() == "[True, True, True, True, True]"


def test_a_signal_while_the_run_is_built_is_named(tmp_path, monkeypatch, capsys):
    """Hashing and loading take minutes on real data: a SIGTERM there ended with 143 and no word."""
    cfg = tiny_config(tmp_path, epochs=1)
    real_open = Trainer._open_data

    def open_and_signal(self):
        os.kill(os.getpid(), signal.SIGTERM)
        real_open(self)

    monkeypatch.setattr(Trainer, "_open_data", open_and_signal)
    assert main(config_args(cfg)) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "SIGTERM: stopped before training began; nothing was trained or saved" in err, err


def test_a_malformed_manifest_or_data_record_is_named(finished, tmp_path, capsys):
    """Valid JSON of the wrong shape: an AttributeError or TypeError traceback before."""
    cfg = copy_of(finished, tmp_path)
    run = Path(cfg.output_dir)
    newest = ckpt.checkpoint_path(run, 8)
    (newest / "manifest.json").write_text('{"files": ["model.safetensors"]}')
    with pytest.raises(ckpt.CheckpointError, match="is not a manifest of this package"):
        ckpt.verify_checkpoint(newest)
    (newest / "manifest.json").write_text('{"files": {"../../../data.json": {"bytes": 1, "sha256": "x"}}}')
    with pytest.raises(ckpt.CheckpointError, match="is not a manifest of this package"):
        ckpt.verify_checkpoint(newest)  # a name that escapes the folder checks nothing in it
    ckpt.write_manifest(newest)
    record = json.loads((run / "data.json").read_text())
    (run / "data.json").write_text(json.dumps(record | {"train": 5}))
    assert main([*config_args(cfg), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "data.json: not a data record of this package" in err and "Traceback" not in err, err


# --- the table in docs/faults.md stays true ---------------------------------------------------


def test_the_fault_table_has_a_row_per_item_and_names_only_tests_that_exist():
    table = (REPO / "docs" / "faults.md").read_text()
    rows = re.findall(r"^\| (\d+) \|.*$", table, flags=re.MULTILINE)
    numbered = len(rows)  # issue 13's 11 cases, then issue 27's
    assert numbered >= 12 and rows == [str(i) for i in range(1, numbered + 1)]
    sources = "".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    named = set(re.findall(r"::(test_\w+)", table))
    assert len(named) >= 30 and all(f"def {name}(" in sources for name in named), \
        sorted(n for n in named if f"def {n}(" not in sources)
    for item in range(1, numbered + 1):  # every numbered row cites a test of that number
        [row] = [line for line in table.splitlines() if line.startswith(f"| {item} |")]
        assert f"test_fault_{item:02d}_" in row


# --- found by attacking the CLI as a user (2026-11-26) -------------------------------------


def signals_in_step(n: int, step):
    """``step`` that sends this process SIGTERM at the start of its n-th call (a preemption)."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(*args, **kwargs)

    return wrapped


@pytest.mark.slow
@pytest.mark.parametrize("epochs", [1, 2])  # step 8 ends the run, or only its first epoch
def test_a_stop_in_the_last_step_still_gets_its_final_evaluation(tmp_path, monkeypatch, epochs):
    """Stopped in an epoch's last step, a run resumes to the evaluation it skipped: the same log."""
    whole = tiny_config(tmp_path / "whole", epochs=epochs)
    Trainer(whole).fit()
    cfg = tiny_config(tmp_path / "cut", epochs=epochs)
    real_step = training.train_step
    monkeypatch.setattr(training, "train_step", signals_in_step(8, real_step))
    assert Trainer(cfg).fit().stopped_early
    monkeypatch.setattr(training, "train_step", real_step)
    assert [r["step"] for r in read_metrics(cfg.output_dir) if r["kind"] == "eval"] == [0]
    result = Trainer(cfg).fit()
    assert result.final_eval is not None and result.steps == 8 * epochs
    records = [{k: v for k, v in r.items() if k not in ("seq_per_s", "elapsed_s")}
               for r in read_metrics(cfg.output_dir)]
    expected = [{k: v for k, v in r.items() if k not in ("seq_per_s", "elapsed_s")}
                for r in read_metrics(whole.output_dir)]
    assert records == expected
    assert Trainer(cfg).fit().final_eval is None  # finished: nothing evaluated twice
    assert read_metrics(cfg.output_dir)[-1]["kind"] == "eval" and len(read_metrics(cfg.output_dir)) == len(expected)


def test_a_run_resumes_from_a_moved_checkout_but_not_with_another_vocabulary(finished, tmp_path, capsys):
    """Paths are not the run's identity: the vocabulary's and the model's contents are."""
    moved = tmp_path / "checkout"
    shutil.copytree(Path(finished.vocab_file).parent, moved)  # data and vocab at another path
    cfg = copy_of(finished, tmp_path, vocab_file=str(moved / "vocab.txt"),
                  train_data=str(moved / "train"), eval_data=str(moved / "eval"))
    assert Trainer(cfg).progress.step == 8
    vocab = (moved / "vocab.txt").read_text().splitlines()
    (moved / "vocab.txt").write_text("\n".join(vocab[:-1] + ["other"]) + "\n")  # same size, other token
    assert main([*config_args(cfg), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "holds a run made with another vocab_file (contents differ)" in err and "Traceback" not in err


def test_resume_with_other_eval_data_says_why_it_matters(finished, tmp_path):
    cfg = copy_of(finished, tmp_path, eval_data=None)
    with pytest.raises(DataChangedError, match=r"eval: shards -> none\)\. Its evaluation curve would mix"):
        Trainer(cfg)


@pytest.mark.parametrize("mistake", ["global batch", "model folder", "metrics line"])
def test_user_mistakes_on_the_command_line_are_named_without_a_traceback(finished, tmp_path, capsys, mistake):
    cfg = copy_of(finished, tmp_path)
    if mistake == "global batch":
        cfg.batch_size, expected = 4, "trained with 8 sequences per optimizer step"
    elif mistake == "model folder":
        cfg = TrainConfig.from_dict(cfg.to_dict() | {"output_dir": str(tmp_path / "new")})
        cfg.model_name_or_path, expected = str(tmp_path / "no-such-model"), "cannot load a model from it"
    else:
        metrics = Path(cfg.output_dir) / "metrics.jsonl"
        lines = metrics.read_text().splitlines()
        metrics.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n")
        expected = "metrics.jsonl: line 3 is not JSON"
    assert main([*config_args(cfg), "--dry-run"]) in (1, 2)
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err


@pytest.mark.slow
def test_a_stop_seen_after_an_epoch_closed_resumes_to_that_epochs_evaluation(tmp_path):
    """Under DDP a stop can be seen after the epoch closed and before its evaluation."""
    whole = tiny_config(tmp_path / "whole", epochs=2)
    Trainer(whole).fit()
    cfg = tiny_config(tmp_path / "cut", epochs=2)
    shutil.copytree(whole.output_dir, cfg.output_dir)  # then undo what followed step 8's save:
    shutil.rmtree(Path(cfg.output_dir) / "checkpoints" / "checkpoint-00000016")
    metrics = Path(cfg.output_dir) / "metrics.jsonl"
    kept = [r for r in read_metrics(metrics) if r["step"] < 8 or (r["step"] == 8 and r["kind"] == "train")]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
    trainer = Trainer(TrainConfig.from_dict(whole.to_dict() | {"output_dir": cfg.output_dir}))
    assert (trainer.progress.step, trainer.progress.epoch, trainer.progress.epoch_samples) == (8, 1, 0)
    trainer.fit()

    def log(run):
        return [{k: v for k, v in r.items() if k not in ("seq_per_s", "elapsed_s")} for r in read_metrics(run)]

    assert log(cfg.output_dir) == log(whole.output_dir)


def test_a_run_folder_in_an_older_format_is_a_named_error(finished, tmp_path, capsys):
    """Formats older than the current one are not read (no user has them): named, no traceback."""
    cfg = copy_of(finished, tmp_path)
    run = Path(cfg.output_dir)
    record = run / "data.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({k: v for k, v in data.items() if k != "inputs"}))  # no hashes yet
    assert main([*config_args(cfg), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert 'data.json: no "inputs" record (written by an older bert_tutorial' in err and "Traceback" not in err
    record.write_text(json.dumps(data))

    checkpoint = ckpt.latest_checkpoint(run)  # a training state without the per-rank RNG streams
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "rng_per_rank"}, checkpoint / "training_state.pt")
    ckpt.write_manifest(checkpoint)
    assert main([*config_args(cfg), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "training_state.pt: no rng_per_rank (saved by an older bert_tutorial" in err and "Traceback" not in err


def test_a_gone_model_folder_warns(finished, tmp_path):
    start = tmp_path / "start-model"  # a run that started from a model folder, now gone
    shutil.copytree(ckpt.latest_checkpoint(finished.output_dir), start)
    from_model = TrainConfig.from_dict(finished.to_dict() | {"output_dir": str(tmp_path / "m"),
                                                             "model_name_or_path": str(start), "max_steps": 4})
    Trainer(from_model).fit()
    shutil.rmtree(start)
    with pytest.warns(UserWarning, match="cannot compare .*start-model with the model the run started from") as caught:
        assert Trainer(from_model).progress.step == 4
    assert {w.filename for w in caught} == {__file__}  # the user's line, not the package's
