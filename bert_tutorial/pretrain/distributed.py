"""Process-group plumbing for DistributedDataParallel, a no-op in a single process.

``torchrun`` (commands in the README) starts one process per GPU or CPU worker and
tells each its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` through the environment.
Every helper here degrades to the single-process behaviour when those are absent, so
the same training code runs in a notebook, on one GPU and under ``torchrun``.

Every collective below must be called by *all* ranks in the same order, or the
job hangs: callers decide whether to call from values that are equal on all
ranks (the step number, a flag reduced with :func:`any_rank`), never from
something only one rank knows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

#: How long a collective may wait for the slowest rank before the job fails.
DEFAULT_TIMEOUT = timedelta(minutes=30)
#: GIL-free pause before tearing the group down (see ``cleanup_distributed``).
_TEARDOWN_PAUSE_S = 0.05


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: global rank, rank on its node, number of processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    #: Started by torchrun (or with its variables set), even as a single process.
    launched: bool = False

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files, logs and plots; the others would race it."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """In a process group, wrapped in DDP: always under torchrun, so that a one-process
        launch (one GPU) runs the very code path of eight processes."""
        return self.world_size > 1 or self.launched


def is_initialized() -> bool:
    """True inside a process group (under torchrun after :func:`init_distributed`)."""
    return dist.is_available() and dist.is_initialized()


def dist_info_from_env(env: dict[str, str] | None = None) -> DistInfo:
    """The ``DistInfo`` torchrun describes in the environment (single process without it)."""
    env = os.environ if env is None else env
    world_size = int(env.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        # torchrun --nproc_per_node=1 sets RANK and the rendezvous address: a group of one.
        launched = world_size == 1 and all(k in env for k in ("RANK", "MASTER_ADDR", "MASTER_PORT"))
        return DistInfo(launched=launched)
    if "RANK" not in env:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} is set but RANK is not: start the job with torchrun "
            "(or set RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT yourself)"
        )
    return DistInfo(
        rank=int(env["RANK"]),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        world_size=world_size,
        launched=True,
    )


def backend_for(device_type: str) -> str:
    """NCCL between GPUs (when this PyTorch build has it), gloo on CPU."""
    if device_type == "cuda" and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun set up: NCCL between GPUs, gloo on CPU.

    Outside torchrun (no ``WORLD_SIZE`` > 1 and no rendezvous variables in the
    environment) this does nothing and returns ``DistInfo()``. Calling it again in a process that already joined a
    group keeps that group.
    """
    info = dist_info_from_env()
    if not info.enabled:
        return info
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; cannot run under torchrun")
    if not dist.is_initialized():
        backend = backend_for(device_type)
        options: dict[str, Any] = {}
        if device_type == "cuda":
            gpus = torch.cuda.device_count()
            if info.local_rank >= gpus:
                raise RuntimeError(
                    f"LOCAL_RANK {info.local_rank} but only {gpus} GPU(s) are visible on this node: "
                    f"launch with --nproc_per_node={gpus} at most, or pass --device cpu to use gloo"
                )
            torch.cuda.set_device(info.local_rank)
            if backend == "nccl":
                # Binds the communicator to this rank's GPU (no guessing in barrier()).
                options["device_id"] = torch.device("cuda", info.local_rank)
        dist.init_process_group(backend=backend, timeout=DEFAULT_TIMEOUT, **options)
    return info


def cleanup_distributed() -> None:
    """Leave the process group (safe to call when there is none; not a collective).

    gloo frees finished collectives on its own worker threads, and freeing a tensor that
    was created in Python needs the GIL. The group's destructor (run when the group, or
    a DDP model holding it, is freed) joins those threads *with* the GIL held, so a
    teardown right after a collective can deadlock at exit (pytorch/pytorch#56297). A
    short pause without the GIL lets the workers finish first. No barrier here: after an
    error on one rank, a barrier would hang instead of letting torchrun stop the job.
    """
    if is_initialized():
        time.sleep(_TEARDOWN_PAUSE_S)
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place (identity in a single process).

    Under NCCL the tensor must live on this rank's GPU; gloo takes CPU tensors.
    """
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait until every rank got here (e.g. rank 0 finished writing a checkpoint)."""
    if is_initialized():
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any rank (e.g. one rank got SIGTERM).

    An all-reduce with MAX, not a broadcast: no rank's value wins, any True does.
    """
    if not is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj: Any) -> Any:
    """Rank 0's (picklable) ``obj`` on every rank, e.g. a decision only rank 0 may make."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def decided_by_rank0(decide: Callable[[], Any], is_main: bool, error: type[Exception]) -> Any:
    """``decide()``, run by rank 0 alone, on every rank: its result, or its error.

    Rank 0 re-raises its own exception; the other ranks raise ``error`` with its message,
    so every rank fails with the same message instead of hanging in the next collective.
    """
    result, message, raised = None, None, None
    if is_main:
        try:
            result = decide()
        except Exception as exc:
            raised, message = exc, str(exc)
    result, message = broadcast_object((result, message))
    if raised is not None:
        raise raised
    if message is not None:
        raise error(message)
    return result


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's (picklable) ``obj``, in rank order, on every rank (``[obj]`` alone)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
