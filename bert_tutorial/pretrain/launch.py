"""Helpers for the multi-GPU notebook: which GPUs are there, and launching a DDP run.

DistributedDataParallel runs one *process* per GPU. A notebook kernel is a single
process, and ``torch.multiprocessing.spawn`` cannot start a function defined in a
notebook cell (the children re-import it by module name, and a kernel's ``__main__``
is not importable). So the notebook launches the package's ordinary entry point,
``python -m torch.distributed.run ... -m bert_tutorial.pretrain``, as a subprocess
and streams its output into the cell::

    from bert_tutorial.pretrain.launch import gpu_report, launch_torchrun
    print(gpu_report())
    launch_torchrun(["--epochs", "1"])   # every GPU with NCCL, or 2 CPU processes with gloo

The CPU fallback is slower than one process on a 2-core laptop, but every DDP mechanism
(process group, disjoint data per rank, gradient all-reduce, rank-0-only checkpoints)
runs exactly as on GPUs. (``nn.DataParallel``, for comparison, is in
:mod:`bert_tutorial.teach.original`.)
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import torch
import torch.distributed as dist

from ..config import REPO_ROOT, TrainConfig
from .distributed import backend_for

#: The entry point every launch runs (a module, so no notebook-defined function is pickled).
PRETRAIN_MODULE = "bert_tutorial.pretrain"
#: Seconds a stopped run gets to finish its step and save before it is killed.
STOP_GRACE_S = 60.0


# --- what is there ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_gib: float
    capability: tuple[int, int]
    multiprocessors: int

    @property
    def bf16(self) -> bool:
        """Ampere (compute capability 8.0) and newer have bf16 tensor cores."""
        return self.capability >= (8, 0)


def list_gpus() -> list[GpuInfo]:
    """The CUDA GPUs this process can see (none without CUDA)."""
    if not torch.cuda.is_available():
        return []
    found = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        found.append(GpuInfo(i, p.name, p.total_memory / 2**30, (p.major, p.minor),
                             p.multi_processor_count))
    return found


def gpu_report() -> str:
    """A few lines on the GPUs present and on what ``launch_torchrun`` will do with them."""
    gpus = list_gpus()
    lines = [f"PyTorch {torch.__version__}, CUDA {torch.version.cuda or 'not built in'}, "
             f"{os.cpu_count()} CPU cores"]
    if not gpus:
        lines.append("No CUDA GPU visible.")
    for g in gpus:
        lines.append(f"  cuda:{g.index}  {g.name}  {g.memory_gib:.1f} GiB  "
                     f"compute {g.capability[0]}.{g.capability[1]}  {g.multiprocessors} SMs  "
                     f"bf16 {'yes' if g.bf16 else 'no'}")
    if len(gpus) >= 2:
        lines.append(f"NCCL available: {'yes' if dist.is_nccl_available() else 'no (gloo will be used)'}")
        try:
            peer = torch.cuda.can_device_access_peer(0, 1)
            lines.append(f"Peer-to-peer cuda:0 <-> cuda:1: {'yes' if peer else 'no (NCCL goes through host memory)'}")
        except Exception:  # informative only
            pass
    lines.append("Plan: " + plan_launch(gpu_count=len(gpus)).reason)
    return "\n".join(lines)


# --- how to launch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchPlan:
    """How many processes to start, on which device, talking over which backend."""

    nproc: int
    device: str  # "cuda" or "cpu"
    backend: str  # "nccl" or "gloo"
    reason: str

    @property
    def device_args(self) -> list[str]:
        """Flags the plan adds to the pretrain command (``--device cpu`` for the CPU fallback)."""
        return ["--device", "cpu"] if self.device == "cpu" else []


def plan_launch(nproc: int | None = None, gpu_count: int | None = None) -> LaunchPlan:
    """One process per GPU with NCCL when the GPUs suffice, else 2 CPU processes on gloo.

    ``nproc`` overrides the number of processes: with 2+ GPUs at most one per GPU; on a
    one-GPU runtime (Colab) ``nproc=1`` runs DDP on that GPU, while the default shows
    two processes on the CPU. ``gpu_count`` overrides the GPUs detected (for tests).
    """
    if nproc is not None and nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    gpus = torch.cuda.device_count() if gpu_count is None else gpu_count
    n = (gpus if gpus >= 2 else 2) if nproc is None else nproc
    if gpus >= 2 or (gpus == 1 and n == 1):
        if n > gpus:
            raise ValueError(f"nproc={n} but only {gpus} GPUs: NCCL needs one GPU per process")
        backend = backend_for("cuda")
        if n == 1:  # a process group of one: the DDP code path, nothing to exchange
            return LaunchPlan(1, "cuda", backend, f"1 process on the only GPU, DDP in a {backend.upper()} "
                                                  "group of one (the code path of many GPUs)")
        return LaunchPlan(n, "cuda", backend, f"{n} processes, one per GPU, gradients all-reduced over "
                                              f"{backend.upper()}")
    why = "no GPU" if gpus == 0 else "only 1 GPU"
    return LaunchPlan(n, "cpu", "gloo",
                      f"{why}: {n} CPU processes with gloo (--device cpu) show the same DDP mechanics")


def config_args(cfg: TrainConfig, *, only_changed: bool = True) -> list[str]:
    """The ``python -m bert_tutorial.pretrain`` flags that reproduce ``cfg`` (fields left at defaults skipped)."""
    defaults = TrainConfig()
    args: list[str] = []
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        if only_changed and value == getattr(defaults, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if value is None and f.default is None:
            continue  # leaving the flag out gives None (and a bool flag cannot say "none")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif value is None:
            args += [flag, "none"]
        else:
            values = value if isinstance(value, tuple | list) else [value]
            args += [flag, *(repr(v) if isinstance(v, float) else str(v) for v in values)]
    return args


def torchrun_command(
    nproc: int,
    extra_args: Sequence[str] = (),
    *,
    program: Sequence[str] = ("-m", PRETRAIN_MODULE),
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "bert_tutorial",
    python: str = sys.executable,
) -> list[str]:
    """The argv of ``torchrun --nproc_per_node=<nproc> <program> <extra_args>``.

    ``program`` is ``("-m", module)`` or ``(script.py,)``.

    ``python -m torch.distributed.run`` is ``torchrun`` run by *this* interpreter, so
    the workers use the notebook's virtual environment. One node uses ``--standalone``
    (a private rendezvous on a free port, so two jobs on one machine do not collide).
    Several nodes use a c10d rendezvous at ``rdzv_endpoint`` ("host:port" of a machine
    every node can reach); run the same command on each node with the same ``rdzv_id``.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if nnodes < 1:
        raise ValueError(f"nnodes must be >= 1, got {nnodes}")
    cmd = [python, "-m", "torch.distributed.run"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise ValueError("a multi-node run needs rdzv_endpoint='host:port' of a node all nodes can reach")
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                f"--rdzv-id={rdzv_id}"]
    cmd += [f"--nproc_per_node={nproc}", *program, *extra_args]
    return cmd


def launch_env(nproc: int) -> dict[str, str]:
    """This environment for the launch: the package importable, unbuffered output, CPU threads shared."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # N processes x all cores each would oversubscribe the CPU; torchrun would pick 1 and warn.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


class LaunchFailed(subprocess.CalledProcessError):
    """A torchrun job that exited non-zero; its message ends with the workers' last lines.

    A notebook runner or a CI log often shows only the exception, not the cell's streamed
    output, and "returned non-zero exit status 1" alone says nothing about why.
    """

    TAIL_LINES = 25

    def __str__(self) -> str:
        lines = [line for line in (self.output or "").replace("\r", "\n").splitlines() if line.strip()]
        # torchrun's agent then reports the failure with a traceback of its own: keep the
        # workers' lines before it and the agent's one line that names the rank and exit code.
        agent = next((i for i, line in enumerate(lines) if "failed (exitcode" in line), None)
        tail = lines[:agent][-self.TAIL_LINES:] + ([lines[agent]] if agent is not None else [])
        text = super().__str__()
        return text + "\nThe job's last lines:\n" + "\n".join(tail) if tail else text


@dataclass
class LaunchResult:
    command: list[str]
    returncode: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def launch_torchrun(
    args: Sequence[str] | TrainConfig = (),
    nproc: int | None = None,
    *,
    program: Sequence[str] = ("-m", PRETRAIN_MODULE),
    timeout: float | None = None,
    echo: TextIO | None = None,
) -> LaunchResult:
    """Run ``torchrun ... -m bert_tutorial.pretrain`` (or ``program``) on this machine, streaming.

    ``args`` are the program's flags, or a ``TrainConfig`` (turned into pretrain flags).
    The process count and device come from :func:`plan_launch` (all GPUs, or 2 CPU
    processes with ``--device cpu``) unless ``nproc`` is given or ``args`` name
    ``--device`` themselves. Output goes to ``echo`` (default: ``sys.stdout`` at call
    time, i.e. the notebook cell) as it arrives, progress bars included. The job inherits
    ``os.environ`` (set e.g. ``NCCL_DEBUG`` there) and runs in the current directory, so
    relative paths mean what they mean in the notebook. A non-zero exit raises
    :class:`LaunchFailed` (a ``subprocess.CalledProcessError``) with the output, whose
    message ends with the job's last lines.

    Interrupting (the notebook's stop button) or hitting ``timeout`` sends SIGTERM to the
    job: each rank finishes its step, rank 0 saves a checkpoint, and running the same
    launch again resumes from it. A job still alive after ``STOP_GRACE_S`` is killed.
    """
    flags = config_args(args) if isinstance(args, TrainConfig) else list(args)
    plan = plan_launch(nproc)
    if not any(a == "--device" or a.startswith("--device=") for a in flags):
        flags = plan.device_args + flags
    cmd = torchrun_command(plan.nproc, flags, program=program)
    out = echo if echo is not None else sys.stdout
    shown = ["python" if part == sys.executable else part for part in cmd]  # as one would type it
    out.write(f"$ {shlex.join(shown)}\n")
    out.flush()

    start = time.perf_counter()
    proc = subprocess.Popen(  # its own process group, so that it can be stopped as a whole
        cmd, env=launch_env(plan.nproc), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    chunks: list[str] = []
    reader = threading.Thread(target=_pump, args=(proc, out, chunks.append), daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_group(proc)
        reader.join()
        raise subprocess.TimeoutExpired(cmd, timeout, output="".join(chunks)) from None
    except KeyboardInterrupt:
        out.write("\nInterrupted: asking the job to save a checkpoint and stop...\n")
        stop_process_group(proc)
        reader.join()
        raise
    reader.join()
    result = LaunchResult(cmd, proc.returncode, "".join(chunks), time.perf_counter() - start)
    if not result.ok:
        raise LaunchFailed(result.returncode, cmd, output=result.output)
    return result


def _pump(proc: subprocess.Popen, out: TextIO, keep: Callable[[str], Any]) -> None:
    """Copy the job's output to ``out`` chunk by chunk (tqdm's ``\\r`` updates need no newline)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # chunks may split a character
    while True:
        data = os.read(fd, 65536)
        text = decoder.decode(data, final=not data)
        if text:
            keep(text)
            out.write(text)
            out.flush()
        if not data:
            break


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the job's process group (ranks save and exit), SIGKILL it if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()
