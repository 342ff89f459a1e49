"""Fault injection: SIGKILL a training run at random steps, restart it, compare.

Runs ``python -m bert_tutorial.pretrain`` on tiny data; whenever the run has logged
a randomly chosen step it is killed with SIGKILL (no chance to clean up, possibly in
the middle of writing a checkpoint) and started again with the same command. When it
finally finishes, its per-step losses and final weights must equal those of a run
that was never interrupted, bit for bit.

    python tests/fault_kill_resume.py --cycles 5 --seed 1       # standalone
    pytest tests/test_faults.py                                   # as part of the suite
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# pytest's pythonpath, for a run outside pytest: the tests' helpers and benchmarks/synthetic.py.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent / "benchmarks")]
from tiny import tiny_data  # noqa: E402

MODEL_FLAGS = [
    "--hidden-size", "32", "--num-hidden-layers", "1", "--num-attention-heads", "2",
    "--intermediate-size", "64", "--max-position-embeddings", "16", "--device", "cpu",
    "--batch-size", "8", "--epochs", "12", "--log-every-steps", "1", "--save-every-steps", "3",
    "--seed", "0", "--no-plots",
]


def command(data: dict[str, str], output_dir: Path) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in data.items()]
    return [sys.executable, "-m", "bert_tutorial.pretrain", *flags, *MODEL_FLAGS,
            f"--output-dir={output_dir}"]


def logged_step(output_dir: Path) -> int:
    """Last train step in metrics.jsonl (0 if none yet); tolerates a half-written line."""
    path = output_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    step = 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("kind") == "train":
            step = record["step"]
    return step


def run_to_completion(cmd: list[str], env: dict[str, str]) -> None:
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_and_kill(cmd: list[str], env: dict[str, str], output_dir: Path, kill_after: int,
                 timeout: float = 120.0) -> bool:
    """Start the run, SIGKILL it once it has logged ``kill_after`` steps; False if it finished first."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if logged_step(output_dir) >= kill_after:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            if time.monotonic() > deadline:
                raise TimeoutError(f"run did not reach step {kill_after} in {timeout} s")
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"training exited with {proc.returncode} before being killed")
    return False


def final_state(output_dir: Path) -> tuple[list[tuple], dict]:
    from safetensors.torch import load_file

    from bert_tutorial.pretrain.checkpoint import latest_checkpoint
    from bert_tutorial.pretrain.metrics import read_metrics

    losses = [(r["step"], r["mlm_loss"], r["nsp_loss"]) for r in read_metrics(output_dir)
              if r["kind"] == "train"]
    return losses, load_file(latest_checkpoint(output_dir) / "model.safetensors")


def kill_resume_cycles(workdir: Path, cycles: int, seed: int) -> list[int]:
    """Run the reference, then the killed-and-restarted run; assert they agree. Returns kill steps."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    data = tiny_data(workdir / "data")
    reference, faulty = workdir / "reference", workdir / "faulty"
    run_to_completion(command(data, reference), env)
    total = logged_step(reference)

    rng = random.Random(seed)
    kills, step = [], 0
    for _ in range(cycles):
        step = rng.randint(step + 1, step + max(2, (total - step) // 3))
        if step >= total or not run_and_kill(command(data, faulty), env, faulty, step):
            break
        kills.append(logged_step(faulty))
        step = max(step, kills[-1])  # the kill lands a step or two late: draw the next from there
    run_to_completion(command(data, faulty), env)

    ref_losses, ref_weights = final_state(reference)
    losses, weights = final_state(faulty)
    assert losses == ref_losses, "losses after kill/resume differ from the uninterrupted run"
    assert ref_weights.keys() == weights.keys()
    assert all((ref_weights[k] == weights[k]).all() for k in ref_weights), "final weights differ"
    return kills


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        kills = kill_resume_cycles(Path(tmp), args.cycles, args.seed)
    print(f"killed at steps {kills}; resumed run identical to the uninterrupted one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
