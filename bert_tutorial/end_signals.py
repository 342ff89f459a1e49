"""The signals that ask a job to end, and handling them within a block.

SLURM's ``scancel``, ``kill`` and ``timeout`` send SIGTERM; Ctrl-C and Jupyter's stop button
SIGINT; SLURM's ``--signal=USR1@60`` warns of the time limit; a closed terminal or ssh
session sends SIGHUP; a CPU-time limit (``ulimit -t``, some schedulers) SIGXCPU before its
SIGKILL. Each ends a process by default, without its clean-up. Shard creation
(``create_data``) and training (``pretrain``) both turn them into their clean stop.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

#: Every signal a cluster or a terminal sends to ask a job to end.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, *(
    getattr(signal, name) for name in ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGXCPU")
    if hasattr(signal, name)))
#: Of those, the ones a launcher may have set to be ignored on purpose (``nohup``): kept so.
_KEEP_IGNORED = tuple(sig for sig in STOP_SIGNALS if sig not in (signal.SIGTERM, signal.SIGINT))


@contextlib.contextmanager
def handling(handler: Callable[[int, Any], None],
             signals: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, ``handler`` handles ``signals`` (not those ignored on purpose); the
    previous handlers come back after it. Outside the main thread (some notebook runners)
    no handler can be installed, and the block runs without them."""
    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: no handler is installed
        for sig in signals:
            if sig in _KEEP_IGNORED and signal.getsignal(sig) == signal.SIG_IGN:
                continue
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
