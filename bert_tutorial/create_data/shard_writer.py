"""Where ``create_data``'s shards go: names, the output folder, and the buffer that fills them.

Shards are ``<output_dir>/<prefix>_shard_00000.hdf5``, or with ``--per-file``
``<output_dir>/<prefix>_<file stem>_shard_00000.hdf5``, so runs over disjoint sets of
files (on several machines) never produce the same name. :func:`prepared_output`
turns every problem with the folder into one error that names it, before any text is
read, and puts old shards back if a run with ``--overwrite`` fails;
:class:`ShardWriter` buffers instances, shuffles each full buffer and hands it as
arrays to a write function (in this process, or in a worker process with
``--workers``).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from ..safe_io import DiskFullError, disk_full_error
from .instances import INT32, Instance

if TYPE_CHECKING:  # numpy and h5py are imported by the process that writes
    import numpy as np

#: What a file stem may contain in a shard name; anything else becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def shard_stem(prefix: str, name: str | None = None) -> str:
    """What precedes ``_shard_00000.hdf5``: ``<prefix>``, or ``<prefix>_<name>`` for one
    input file's shards (``--per-file``). Writing and finding old shards both use it."""
    return prefix if name is None else f"{prefix}_{name}"


def shard_name(path: Path) -> str:
    """The part of a shard name that stands for an input file: its stem, made file-name safe."""
    return _UNSAFE.sub("_", path.stem)


def check_output_dir(output_dir: Path) -> None:
    """Refuse, with a message naming the folder, an output folder that cannot be made or written.

    Called before any text is read, so a typo in ``--output-dir`` costs nothing.
    """
    existing = next((p for p in (output_dir, *output_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "exists and" if existing == output_dir else str(existing)
        raise ValueError(f"--output-dir {output_dir}: {what} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--output-dir {output_dir}: {existing} is not writable")


def _shard_pattern(prefix: str, names: Sequence[str] | None, suffix: str = "") -> re.Pattern[str]:
    """The file names of this run's shards (plus ``suffix``): ``<stem>_shard_NNNNN.hdf5``, for
    the stem of ``prefix`` (or of each per-file name), and no other run's."""
    stems = [shard_stem(prefix)] if names is None else [shard_stem(prefix, n) for n in names]
    return re.compile(
        rf"^(?:{'|'.join(map(re.escape, stems))})_shard_\d{{5,}}\.hdf5{re.escape(suffix)}$"
    )


def remove_temporary_shards(output_dir: Path, prefix: str, names: Sequence[str] | None) -> None:
    """Remove the ``<shard>.hdf5.tmp`` files of this run's shard names from ``output_dir``.

    A shard is written under that name and renamed when complete (``hdf5_format``);
    a worker process terminated mid-write (an error elsewhere ends the pool at once)
    cannot remove its own. Only this run's names are touched: other runs (other
    prefixes, other machines' ``--per-file`` names) may be writing into the folder.
    """
    pattern = _shard_pattern(prefix, names, ".tmp")
    for path in output_dir.iterdir():
        if pattern.match(path.name):
            path.unlink(missing_ok=True)


def _set_aside(output_dir: Path, prefix: str, old: Sequence[Path]) -> Path:
    """Move ``old`` shards into a new hidden folder of ``output_dir`` (renames: nothing copied).

    Hidden and in a folder of its own, so nothing that globs ``*.hdf5`` reads them;
    a unique name, so runs of other files sharing the folder never collide.
    """
    aside = Path(tempfile.mkdtemp(prefix=f".{prefix}-replaced-", dir=output_dir))
    moved: list[Path] = []
    try:
        for path in old:
            path.rename(aside / path.name)
            moved.append(path)
    except BaseException:  # put back what was moved: the folder must stay as it was
        for path in moved:
            (aside / path.name).rename(path)
        aside.rmdir()
        raise
    return aside


def _put_back(aside: Path, output_dir: Path, pattern: re.Pattern[str]) -> None:
    """Undo :func:`_set_aside` after a failed run: its new shards go, the old ones come back."""
    for path in output_dir.iterdir():
        if pattern.match(path.name):  # written by this run: would mix with the old ones
            path.unlink()
    for path in aside.iterdir():
        path.rename(output_dir / path.name)
    aside.rmdir()


@contextmanager
def prepared_output(
    output_dir: Path, prefix: str, overwrite: bool, names: Sequence[str] | None = None
) -> Iterator[None]:
    """Around a run: create the folder (checked by :func:`check_output_dir`), refuse (or with
    ``overwrite`` replace) old shards of the same names, and clean up if the run fails.

    With per-file ``names`` only those files' shards count, so machines writing the
    shards of other files into a shared folder are left alone. With ``overwrite`` the
    old shards are set aside (:func:`_set_aside`) and deleted only when the run has
    written every new shard; on any error, Ctrl-C included, they are put back
    exactly as they were, so a failed run never loses them. (A run killed outright
    leaves them in ``.<prefix>-replaced-*``: kept, never deleted.) Any failure also
    removes this run's temporary shard files (:func:`remove_temporary_shards`).
    """
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--output-dir {output_dir}: cannot create it ({exc.strerror})") from exc
    shards = _shard_pattern(prefix, names)
    _refuse_left_aside(output_dir, prefix, shards)
    old = sorted(p for p in output_dir.iterdir() if shards.match(p.name))
    if old and not overwrite:
        raise ValueError(
            f"{output_dir}: already holds {len(old)} '{prefix}' shard(s) (e.g. {old[0].name}); "
            "pass --overwrite to replace them or choose another --prefix"
        )
    aside = _set_aside(output_dir, prefix, old) if old else None
    try:
        yield
    except BaseException as exc:
        remove_temporary_shards(output_dir, prefix, names)
        if aside is not None:
            _put_back(aside, output_dir, shards)
        if isinstance(exc, DiskFullError):  # say what the folder holds now, and what to run
            raise _no_room(exc, output_dir, shards, aside is not None, overwrite) from exc
        raise
    if aside is not None:
        shutil.rmtree(aside)


def _refuse_left_aside(output_dir: Path, prefix: str, shards: re.Pattern[str]) -> None:
    """Refuse to start while an earlier ``--overwrite`` run's set-aside shards are still hidden.

    A run killed outright (SIGKILL, a crash) cannot put the old shards back; they stay in
    ``.<prefix>-replaced-*``. Writing new shards beside them would bury them for good (a
    successful run removes only its own folder), so the user decides first.
    """
    for aside in sorted(output_dir.glob(f".{prefix}-replaced-*")):
        held = sorted(p.name for p in aside.iterdir() if shards.match(p.name)) if aside.is_dir() else []
        if held:
            raise ValueError(
                f"{aside}: holds {len(held)} old '{prefix}' shard(s) (e.g. {held[0]}) that an "
                f"--overwrite run set aside and could not put back (it was killed); move them "
                f"back into {output_dir} (after deleting the '{prefix}' shards that run left "
                "there) or delete that folder, then run again"
            )


def _no_room(exc: DiskFullError, output_dir: Path, shards: re.Pattern[str], put_back: bool,
             overwrite: bool) -> DiskFullError:
    """The disk-full error of a failed run, once the folder is cleaned up: what it holds now."""
    left = [p for p in output_dir.iterdir() if shards.match(p.name)]
    if put_back:
        intact, then = f"the old shards are back in {output_dir} as they were", ""
    elif left:
        intact = f"the {len(left)} shard(s) already in {output_dir} are complete, the run is not"
        then = "" if overwrite else " with --overwrite"
    else:
        intact, then = "no shard was written", ""
    return disk_full_error(exc.__cause__ or exc, exc.target or output_dir, intact, then)


def _padded(rows: Sequence[Sequence[int]], width: int) -> np.ndarray:
    """``rows`` as an int32 ``(len(rows), width)`` array, each padded with zeros on the right.

    Rows are joined with their padding bytes in one C call; rows that are not yet
    32-bit ``array``s (as :func:`~bert_tutorial.create_data.instances.create_instances` makes them)
    are converted first.
    """
    import numpy as np

    padding = [bytes(4 * k) for k in range(width + 1)]
    rows = [row if isinstance(row, array) and row.typecode == INT32 else array(INT32, row)
            for row in rows]
    joined = bytearray().join(chain.from_iterable((row, padding[width - len(row)]) for row in rows))
    return np.frombuffer(joined, np.int32).reshape(len(rows), width)


def instances_to_arrays(
    instances: Sequence[Instance], max_seq_length: int, max_predictions: int
) -> dict[str, np.ndarray]:
    """Pad instances into the arrays of the shard format (see ``hdf5_format``)."""
    import numpy as np

    n = len(instances)
    lengths = np.fromiter((len(inst.input_ids) for inst in instances), np.int64, n)
    num_a = np.fromiter((inst.num_segment_a for inst in instances), np.int64, n)
    num_pred = np.fromiter((len(inst.masked_lm_positions) for inst in instances), np.int64, n)
    if n and (lengths.max() > max_seq_length or num_pred.max() > max_predictions):
        raise ValueError(f"an instance is longer than T={max_seq_length} or P={max_predictions}")
    columns = np.arange(max_seq_length)
    return {
        "input_ids": _padded([inst.input_ids for inst in instances], max_seq_length),
        "input_mask": (columns < lengths[:, None]).astype(np.int8),
        "segment_ids": ((columns >= num_a[:, None]) & (columns < lengths[:, None])).astype(np.int8),
        "masked_lm_positions": _padded([i.masked_lm_positions for i in instances], max_predictions),
        "masked_lm_ids": _padded([inst.masked_lm_ids for inst in instances], max_predictions),
        "next_sentence_labels": np.fromiter((i.is_random_next for i in instances), np.int8, n),
    }


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write one shard's arrays (compressing them: the costly part, done wherever it is called)."""
    from ..hdf5_format import write_shard  # h5py: imported by the process that writes

    return write_shard(path, arrays)


#: ``(path, arrays) -> None``: writes one shard now or arranges for it to be written.
WriteFunction = Callable[[Path, "dict[str, np.ndarray]"], None]


@dataclass
class ShardWriter:
    """Buffers instances and writes a shuffled shard every ``shard_size`` instances.

    The shuffle draws from the run's one generator, so where a shard boundary falls
    is part of the random stream; the write itself (compression) draws nothing and
    may happen anywhere, which is what ``--workers`` uses. The instances are padded
    into arrays here, since arrays cost far less to send to another process than
    instance objects.
    """

    output_dir: Path
    prefix: str
    shard_size: int
    shape: tuple[int, int]
    rng: random.Random
    write: WriteFunction | None = None
    name: str | None = None
    #: Masks a full shard's arrays (``bert_tutorial.create_data.masking``) when the instances come unmasked.
    masker: Callable[[dict[str, np.ndarray], int], None] | None = None
    buffer: list[Instance] = field(default_factory=list)
    written: list[tuple[Path, int]] = field(default_factory=list)

    def add(self, instance: Instance) -> None:
        """Buffer one instance; write a shard when the buffer is full."""
        self.buffer.append(instance)
        if len(self.buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffer (shuffled, so a shard does not hold one document's instances in a row)."""
        if not self.buffer:
            return
        self.rng.shuffle(self.buffer)
        stem = shard_stem(self.prefix, self.name)
        path = self.output_dir / f"{stem}_shard_{len(self.written):05d}.hdf5"
        arrays = instances_to_arrays(self.buffer, *self.shape)
        if self.masker is not None:
            self.masker(arrays, len(self.written))
        (self.write or write_arrays)(path, arrays)
        self.written.append((path, len(self.buffer)))
        self.buffer = []

    @property
    def instances(self) -> int:
        """Instances written or buffered so far (for the progress bar)."""
        return sum(n for _, n in self.written) + len(self.buffer)
