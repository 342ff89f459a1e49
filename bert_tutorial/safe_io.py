"""Writing run files so that a crash, a kill or a full disk never leaves a half-written one.

A file that is rewritten in place (``open(path, "w")``) is empty or truncated for a
moment; a kill or a full disk at that moment destroys the old contents without
delivering the new. :func:`write_text_atomic` writes a temporary file beside the
target, flushes it to disk and renames it over the target: rename is atomic, so a
reader sees the old file or the new one, never a mixture.

A full disk (or a file size limit, ``ulimit -f``: EFBIG) shows up in many disguises:
``OSError(ENOSPC)`` from Python, "No space left on device (os error 28)" from
safetensors, or torch's C++ writer's "unexpected pos ... / basic_ios::clear: iostream
error", which carries no errno at all. :func:`is_disk_full` recognises all of them so the user reads
:class:`DiskFullError` instead of a stream error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

#: Free space below which a failed write is blamed on a full disk (a write that fills a
#: disk leaves ~0 bytes; ext4's reserved blocks are not counted in ``disk_usage().free``).
FULL_BELOW_BYTES = 16 * 2**20
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_FULL_TEXTS = ("no space left", "os error 28", "disk quota exceeded")
#: A file size limit (``ulimit -f``, or FAT32's 4 GiB): EFBIG, "File too large (os error 27)".
_LIMIT_TEXTS = ("file too large", "os error 27")


class DiskFullError(OSError):
    """A write failed because the disk (or the user's quota) is full.

    The message says what was being written and what is still intact, so the user
    knows that freeing space and running the same command again loses nothing.
    """

    def __init__(self, message: str, target: str | Path | None = None) -> None:
        super().__init__(errno.ENOSPC, message)
        self.message = message
        #: The file whose write found no room (None when not known).
        self.target = None if target is None else Path(target)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[DiskFullError], tuple[str, Path | None]]:
        # OSError pickles as (errno, strerror), which this __init__ does not take: without
        # this, the error of a worker process (create_data --workers) could not come back.
        return type(self), (self.message, self.target)


def _free_bytes(folder: Path) -> int | None:
    """Free space on ``folder``'s file system (None when it cannot be asked)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def is_disk_full(exc: BaseException, folder: str | Path) -> bool:
    """True if ``exc`` (or an exception it chains to) means: no space left on ``folder``.

    Call it *before* deleting what the failed write left behind: torch's stream errors
    carry no errno, and for those the only evidence is a file system with no room left.
    """
    if any(_says(seen, _FULL_ERRNOS, _FULL_TEXTS + _LIMIT_TEXTS) for seen in _causes(exc)):
        return True
    if not isinstance(exc, OSError | RuntimeError):
        return False
    free = _free_bytes(Path(folder))
    return (free is not None and free < FULL_BELOW_BYTES) or _file_size_limited()


def _file_size_limited() -> bool:
    """True when this process may not write files of any size (``ulimit -f``)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return False
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return soft != resource.RLIM_INFINITY


NO_SPACE = ("no space left", "free some space")
LIMIT_REACHED = ("the file size limit was reached",
                 "raise the limit (ulimit -f), or write to a file system that allows larger files,")


def _no_room(exc: BaseException) -> tuple[str, str]:
    """(what happened, what to do) for a write that found no room: a full disk or a size limit."""
    for seen in _causes(exc):
        if _says(seen, {errno.EFBIG}, _LIMIT_TEXTS):
            return LIMIT_REACHED
        if _says(seen, _FULL_ERRNOS, _FULL_TEXTS):
            return NO_SPACE
    # torch's writer says only "unexpected pos": blame the limit if there is one.
    return LIMIT_REACHED if _file_size_limited() else NO_SPACE


def disk_full_error(exc: BaseException, target: Path, intact: str, then: str = "") -> DiskFullError:
    """The error for a write of ``target`` that found no room: what happened, what is still
    intact (``intact``), what to do, and what running the same command again does (``then``)."""
    what, remedy = _no_room(exc)
    return DiskFullError(f"{what} while writing {target}; {intact}: {remedy} "
                         f"and run the same command again{then}", target)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it chains to (the chain is short; a bound guards against cycles)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _says(exc: BaseException, errnos: set[int], texts: tuple[str, ...]) -> bool:
    """True if ``exc`` carries one of ``errnos`` or its message holds one of ``texts``."""
    if isinstance(exc, OSError) and exc.errno in errnos:
        return True
    return any(text in str(exc).lower() for text in texts)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or a new file in ``folder`` durable (the directory entry itself)."""
    with contextlib.suppress(OSError):  # e.g. a platform without directory handles: best effort
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` all at once: readers see the old file or the new one.

    A full disk raises :class:`DiskFullError` and leaves the old file as it was.
    """
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: str | Path, data: bytes, tmp: str | Path | None = None,
                       intact: str = "its previous version is intact") -> None:
    """Replace ``path`` by ``data`` all at once (see :func:`write_text_atomic`).

    ``tmp`` is the temporary file's name (default: hidden beside ``path``, with this
    process's id), for callers whose clean-up looks for temporary files by name.
    A full disk or a file size limit raises :class:`DiskFullError` saying ``intact``;
    the temporary file is removed whatever goes wrong.
    """
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        full = is_disk_full(exc, path.parent)
        tmp.unlink(missing_ok=True)
        if full:
            raise disk_full_error(exc, path, intact) from exc
        raise
    fsync_dir(path.parent)
