"""Stopping on request the way clusters and notebooks ask: SIGTERM, SIGINT and their kin.

SLURM's ``scancel``, ``kill -TERM -<pgid>`` and ``timeout`` send SIGTERM to every
process of the job; Ctrl-C and Jupyter's stop button send SIGINT. The first signal
asks the Trainer to finish the current optimizer step, save a checkpoint and return
(``TrainResult.stopped_early``); a second one stops at once (:class:`StopNow`), for
when saving is not worth waiting for. DataLoader workers ignore both
(:func:`ignore_stop_signals`) so they cannot turn the request into
a crash.

A launcher may deliver one request twice: ``torchrun`` forwards the SIGTERM its
workers already got from the process group. Signals within ``GRACE_S`` of the first
therefore count as the same request.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..end_signals import STOP_SIGNALS, handling

#: A repeat within this many seconds is the same request delivered twice, not a second one.
GRACE_S = 1.0
class StopNow(KeyboardInterrupt):
    """A second stop signal: training stops at once, without saving."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(message or f"{name} received twice: stopped at once, without saving; "
                         "the last checkpoint is intact")


@contextlib.contextmanager
def stop_before_training() -> Iterator[None]:
    """While a run is built (before ``fit`` installs its own handlers): a stop signal ends it at
    once with :class:`StopNow` saying so, instead of the bare exit status of a killed process."""

    def handle(signum: int, frame: Any) -> None:
        raise StopNow(signum, f"{signal.Signals(signum).name}: stopped before training began; "
                              "nothing was trained or saved (its checkpoints are as they were)")

    with handling(handle):
        yield


@contextlib.contextmanager
def stop_signals(on_request: Callable[[int], None]) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT call ``on_request(signum)`` once; a later one stops.

    Outside the main thread (some notebook runners) handlers cannot be installed and
    the block runs without them, as it would without this function.
    """
    first: dict[str, float] = {}

    def handle(signum: int, frame: Any) -> None:
        now = time.monotonic()
        if "at" not in first:
            first["at"] = now
            on_request(signum)
        elif now - first["at"] > GRACE_S:
            raise StopNow(signum)

    with handling(handle):
        yield


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: leave SIGTERM and SIGINT to the main process.

    A cluster delivers preemption to the whole process group (``scancel``, ``kill -TERM
    -PGID``, ``timeout``) and Ctrl-C reaches every process of the terminal's group. A
    worker killed by it makes the main process fail with "DataLoader worker ... killed
    by signal" before it can save. So a worker ignores SIGINT, and SIGTERM from anyone
    but its parent; the parent's own SIGTERM (how ``multiprocessing`` ends workers at
    exit) still ends it quietly, or the interpreter's exit would wait for it forever.
    Python handlers cannot see who sent a signal, so SIGTERM is blocked and received
    by a thread with ``sigwaitinfo`` (Linux; elsewhere only SIGINT is ignored).
    """
    for sig in STOP_SIGNALS:  # the main process decides; SIGTERM from the parent: see below
        if sig != signal.SIGTERM:
            signal.signal(sig, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):
        return
    parent = os.getppid()

    def receive() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(0)

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by the thread
    threading.Thread(target=receive, name="sigterm-from-parent", daemon=True).start()
