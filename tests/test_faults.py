"""Crash and preemption of a real training process (subprocesses, CPU)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from fault_kill_resume import command, final_state, kill_resume_cycles, logged_step
from tiny import tiny_data


def test_sigkill_at_random_steps_then_resume_is_bit_identical(tmp_path):
    kills = kill_resume_cycles(tmp_path, cycles=3, seed=7)
    assert len(kills) >= 2  # the run really was killed (and resumed) several times


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    data = tiny_data(tmp_path / "data")
    reference, preempted = tmp_path / "reference", tmp_path / "preempted"
    subprocess.run(command(data, reference), check=True, capture_output=True)

    # Checkpoints only at epoch ends (every 8 steps), so SIGTERM must save mid-epoch itself.
    cmd = [*command(data, preempted), "--save-every-steps", "0"]  # the last flag wins
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while logged_step(preempted) < 5 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "Stopped on request at step" in out
    stopped_at = int(out.split("Stopped on request at step ")[1].split(";")[0])
    state_file = preempted / "checkpoints" / f"checkpoint-{stopped_at:08d}" / "training_state.pt"
    assert state_file.exists() and stopped_at % 8 != 0  # a mid-epoch checkpoint

    subprocess.run(cmd, check=True, capture_output=True)  # same command: resumes
    assert final_state(preempted)[0] == final_state(reference)[0]
    evals = [json.loads(line) for line in (preempted / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    assert len({e["step"] for e in evals}) == len(evals)  # no step evaluated twice
