"""Stopping on request the way clusters and notebooks ask: SIGTERM and SIGINT.

SLURM's ``scancel``, ``kill -TERM -<pgid>`` and ``timeout`` send SIGTERM to every
process of the job; Ctrl-C and Jupyter's stop button send SIGINT. The first signal
asks the Trainer to finish the current optimizer step, save a checkpoint and return
(``TrainResult.stopped_early``); a second one stops at once (:class:`StopNow`), for
when saving is not worth waiting for. DataLoader workers ignore both
(:func:`bert_tutorial.data.ignore_stop_signals`) so they cannot turn the request into
a crash.

A launcher may deliver one request twice: ``torchrun`` forwards the SIGTERM its
workers already got from the process group. Signals within ``GRACE_S`` of the first
therefore count as the same request.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

#: A repeat within this many seconds is the same request delivered twice, not a second one.
GRACE_S = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopNow(KeyboardInterrupt):
    """A second stop signal: training stops at once, without saving."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"{name} received twice: stopped at once, without saving; "
                         "the last checkpoint is intact")


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

    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: no handler is installed
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
