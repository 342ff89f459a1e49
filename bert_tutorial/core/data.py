"""Lazy loading of pre-training shards, and a shard-aware sampler for (distributed) training.

The data are a folder of HDF5 shards (schema in :mod:`bert_tutorial.hdf5_format`). A full
pre-training corpus is far larger than RAM, so the dataset holds one shard at a time and
the sampler orders the samples shard by shard. Samples come out named as
``transformers.BertForPreTraining`` expects, plus the sparse ``masked_lm_positions`` /
``masked_lm_ids`` pair for a head that only decodes masked tokens.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..hdf5_format import ShardError, ShardInfo, inspect_shard, read_shard

#: Label value that ``torch.nn.CrossEntropyLoss`` (and Hugging Face models) ignore.
IGNORE_INDEX = -100
#: File endings recognised as shards when a folder is given.
SHARD_SUFFIXES = (".hdf5", ".h5", ".hdf")

PathLike = str | Path


def find_shards(path_or_paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """Resolve a folder, a single file or a list of either into a sorted list of shard files.

    Sorting makes the shard list (and hence every global sample index) identical on all
    ranks and across restarts, which resuming and distributed sampling rely on. The same
    file reached twice (a symlink or hard link beside its target) is refused: it would
    silently be trained on twice per epoch.
    """
    if isinstance(path_or_paths, str | Path):
        path_or_paths = [path_or_paths]
    shards: list[Path] = []
    for item in path_or_paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SHARD_SUFFIXES)
            if not found:
                raise ShardError(
                    f"{path}: folder holds no shard files ({', '.join(SHARD_SUFFIXES)})"
                    + _set_aside_hint(path)
                )
            shards.extend(found)
        elif path.is_file():
            shards.append(path)
        else:
            raise ShardError(f"{path}: no such shard file or folder")
    if not shards:
        raise ShardError(f"{list(path_or_paths)}: no shard files given")
    _refuse_duplicates(shards)
    return shards


def _set_aside_hint(folder: Path) -> str:
    """Where the shards of a folder went, if an interrupted ``create_data --overwrite`` hid them.

    It moves the old shards into ``.<prefix>-replaced-*`` while it writes the new ones; a
    run killed outright leaves them there, and the folder then looks empty.
    """
    hidden = [aside for aside in sorted(folder.glob(".*-replaced-*")) if aside.is_dir()
              and any(p.suffix in SHARD_SUFFIXES for p in aside.iterdir())]
    if not hidden:
        return ""
    return (f"; {hidden[0]} holds shards that an interrupted create_data --overwrite set aside: "
            "move them back into the folder")


def _refuse_duplicates(shards: Sequence[Path]) -> None:
    """Raise if two entries are one file on disk (same device and inode)."""
    seen: dict[tuple[int, int], Path] = {}
    for path in shards:
        stat = path.stat()
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            raise ShardError(
                f"{path}: the same file as {seen[key]} (a symlink or hard link); each shard "
                "must be listed once, or its samples are trained on twice per epoch"
            )
        seen[key] = path


def build_mlm_labels(
    masked_lm_positions: np.ndarray, masked_lm_ids: np.ndarray, seq_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Turn the sparse (positions, ids) pair into dense MLM labels and sparse ids with ignores.

    Works on one sample (shape ``(P,)``) or a batch (``(..., P)``). Returns

    * ``labels`` of shape ``(..., seq_length)``: the original id at each masked position,
      ``-100`` everywhere else, as ``BertForPreTraining`` wants;
    * ``ids`` of shape ``(..., P)``: ``masked_lm_ids`` with ``-100`` in padded slots.

    A slot is padding when its position is 0: [CLS] sits at 0 and is never masked. The
    original tutorial scattered every slot, so padded slots put a label (id 0) on [CLS]
    and the model was trained to predict [PAD] there.
    """
    positions = np.asarray(masked_lm_positions, dtype=np.int64)
    ids = np.asarray(masked_lm_ids, dtype=np.int64)
    if positions.shape != ids.shape:
        raise ValueError(f"positions {positions.shape} and ids {ids.shape} differ in shape")
    sparse_ids = np.where(positions != 0, ids, IGNORE_INDEX)
    labels = np.full((*positions.shape[:-1], seq_length), IGNORE_INDEX, dtype=np.int64)
    # Padded slots write IGNORE_INDEX onto position 0, which is IGNORE_INDEX anyway.
    np.put_along_axis(labels, positions, sparse_ids, axis=-1)
    return labels, sparse_ids


def sample_to_tensors(arrays: dict[str, np.ndarray], index: int | slice) -> dict[str, torch.Tensor]:
    """Row ``index`` of a loaded shard as the ``torch.long`` tensors the model consumes.

    A ``slice`` gives the rows as one batch, exactly as the DataLoader would collate them.
    """
    seq_length = arrays["input_ids"].shape[1]
    labels, sparse_ids = build_mlm_labels(
        arrays["masked_lm_positions"][index], arrays["masked_lm_ids"][index], seq_length
    )

    def long(values: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.int64))

    return {
        "input_ids": long(arrays["input_ids"][index]),
        "token_type_ids": long(arrays["segment_ids"][index]),
        # From the file, not all ones: padding must not be attended to.
        "attention_mask": long(arrays["input_mask"][index]),
        "labels": long(labels),
        "next_sentence_label": long(arrays["next_sentence_labels"][index]),
        "masked_lm_positions": long(arrays["masked_lm_positions"][index]),
        "masked_lm_ids": long(sparse_ids),
    }


class PretrainingDataset(Dataset[dict[str, torch.Tensor]]):
    """Map-style dataset over many shards that holds at most one shard in memory.

    Building it only inspects each shard's metadata, so a corpus of hundreds of shards
    opens in seconds and a malformed file fails here, naming the file. Values (e.g. ids
    beyond the vocabulary) are checked when a shard is first loaded.

    No h5py handle is kept on the object: it is pickled into DataLoader workers, and each
    load opens the file afresh. Access should be shard-blocked (see :class:`ShardedSampler`);
    random access across shards works but reloads a shard on every switch.
    """

    def __init__(
        self, shards: PathLike | Sequence[PathLike], vocab_size: int | None = None
    ) -> None:
        self.vocab_size = vocab_size
        self.shards: list[ShardInfo] = [inspect_shard(p) for p in find_shards(shards)]
        first = self.shards[0]
        for info in self.shards[1:]:
            if (info.max_seq_length, info.max_predictions) != (first.max_seq_length,
                                                               first.max_predictions):
                raise ShardError(
                    f"{info.path}: field 'input_ids'/'masked_lm_positions' has sequence length "
                    f"{info.max_seq_length} and {info.max_predictions} predictions, but {first.path} "
                    f"has {first.max_seq_length} and {first.max_predictions}; all shards must match"
                )
        self.max_seq_length = first.max_seq_length
        self.max_predictions = first.max_predictions
        self.shard_sizes = [info.num_samples for info in self.shards]
        #: ``offsets[k]`` is the global index of shard k's first sample; the last is the total.
        self.offsets = [0, *itertools.accumulate(self.shard_sizes)]
        #: Number of the shard currently held in memory (None before the first read).
        self.cached_shard: int | None = None
        self._cached_arrays: dict[str, np.ndarray] | None = None

    @property
    def paths(self) -> list[Path]:
        return [info.path for info in self.shards]

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """Global sample index -> (shard number, row within that shard)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        shard = bisect.bisect_right(self.offsets, index) - 1
        return shard, index - self.offsets[shard]

    def load_shard(self, shard: int) -> dict[str, np.ndarray]:
        """Arrays of shard ``shard``, replacing whatever shard was cached before."""
        if self.cached_shard != shard:
            self._cached_arrays = None  # free the old shard before reading the new one
            info = self.shards[shard]
            arrays = read_shard(info, self.vocab_size)
            found = (len(arrays["input_ids"]), arrays["input_ids"].shape[1],
                     arrays["masked_lm_positions"].shape[1])
            expected = (info.num_samples, info.max_seq_length, info.max_predictions)
            if found != expected:  # the sampler's indices were counted from the old file
                raise ShardError(
                    f"{info.path}: holds {found[0]} rows of length {found[1]} ({found[2]} "
                    f"predictions) now, {expected[0]} of length {expected[1]} ({expected[2]}) when "
                    "the data set was opened: the file was replaced while it was in use; restore "
                    "it, or start again (resuming checks the data against data.json)")
            self._cached_arrays = arrays
            self.cached_shard = shard
        assert self._cached_arrays is not None
        return self._cached_arrays

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        shard, row = self.locate(index)
        return sample_to_tensors(self.load_shard(shard), row)

    def __getstate__(self) -> dict[str, Any]:
        # Workers start with an empty cache instead of a pickled copy of the parent's shard.
        state = self.__dict__.copy()
        state["cached_shard"] = None
        state["_cached_arrays"] = None
        return state


class ShardedSampler(Sampler[int]):
    """Shard-blocked, epoch-reproducible, rank-partitioned order of global sample indices.

    Per epoch, the shard order is a permutation drawn from ``(seed, epoch)`` and each
    shard's samples are permuted by ``(seed, epoch, shard)``; the global order is the
    concatenation of shuffled shards, so consecutive indices stay in one shard and a
    reader (each DataLoader worker included) holds one shard at a time. Permutations are
    made one shard at a time while iterating, so memory does not grow with the corpus.

    Rank ``r`` of ``world_size`` takes positions ``r, r + world_size, ...`` of that order.
    Striding (rather than contiguous slices) makes the union of the ranks' k-th batches
    exactly the k-th batch of a single process with a ``world_size`` times larger batch,
    so a DDP run follows the same trajectory as a one-process run of the same global
    batch, and a run can resume with another world size. The price: every rank reads
    every shard (still one at a time). All ranks must yield the same number of samples or
    DDP hangs at the next collective, so the order is truncated to a multiple of
    ``world_size`` (at most ``world_size - 1`` samples of the epoch are skipped, different
    ones each epoch). ``even=False`` (for evaluation, which has no per-batch collective) gives every rank
    its stride of the order without truncating or padding: ranks differ by at most one
    sample, and together they cover every sample exactly once.

    Resuming mid-epoch: ``set_start(n)`` skips the first ``n`` samples of this rank's
    part for the current epoch only; ``set_epoch`` with a new epoch clears it.
    ``shuffle=False`` gives the sequential order (for evaluation).
    """

    def __init__(
        self,
        dataset: Any,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even: bool = True,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        #: Datasets without shard structure are treated as one shard.
        self.shard_sizes: list[int] = list(getattr(dataset, "shard_sizes", [len(dataset)]))
        #: A dataset whose samples depend on the epoch (dynamic masking) is told each new one.
        self._dataset_set_epoch: Callable[[int], None] | None = getattr(dataset, "set_epoch", None)
        self.offsets = [0, *itertools.accumulate(self.shard_sizes)]
        self.total = self.offsets[-1]
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.even = even
        self.num_samples_per_rank = (self.total // world_size if even
                                     else max(0, -(-(self.total - rank) // world_size)))
        self.epoch = 0
        self.start_index = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order to produce; a new epoch starts from its beginning.

        A dataset with a ``set_epoch`` of its own (:class:`~bert_tutorial.core.dynamic_masking.
        DynamicMaskingDataset`) is moved to the same epoch, so one call keeps both in step.
        """
        if epoch != self.epoch:
            self.start_index = 0
        self.epoch = epoch
        if self._dataset_set_epoch is not None:
            self._dataset_set_epoch(epoch)

    def set_start(self, num_samples: int) -> None:
        """Skip the first ``num_samples`` of this rank's samples in the current epoch (resume)."""
        if not 0 <= num_samples <= self.num_samples_per_rank:
            raise ValueError(
                f"start {num_samples} outside [0, {self.num_samples_per_rank}] samples of rank "
                f"{self.rank}; was the run resumed with a different world size or data?"
            )
        self.start_index = num_samples

    def __len__(self) -> int:
        return self.num_samples_per_rank - self.start_index

    def __iter__(self) -> Iterator[int]:
        first = self.rank + self.start_index * self.world_size
        # Capped at the epoch's end: positions past this rank's last sample are never taken
        # by the stride, so the cap only spares reading them (and gives even=False its tail).
        stop = min(self.rank + self.num_samples_per_rank * self.world_size, self.total)
        return itertools.islice(self._order(first, stop), 0, None, self.world_size)

    def shard_order(self) -> list[int]:
        """Order in which shards are visited this epoch."""
        if not self.shuffle:
            return list(range(len(self.shard_sizes)))
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.permutation(len(self.shard_sizes)).tolist()

    def _shard_indices(self, shard: int) -> np.ndarray:
        """Global indices of one shard, in this epoch's order."""
        indices = np.arange(self.offsets[shard], self.offsets[shard + 1])
        if self.shuffle:
            indices = np.random.default_rng([self.seed, self.epoch, shard]).permutation(indices)
        return indices

    def _order(self, start: int, stop: int) -> Iterator[int]:
        """Positions ``[start, stop)`` of the epoch order (``stop <= total``)."""
        if start >= stop:
            return
        position = 0
        for shard in self.shard_order():
            size = self.shard_sizes[shard]
            if position + size > start:
                chunk = self._shard_indices(shard)
                yield from chunk[max(start - position, 0) : stop - position].tolist()
            position += size
            if position >= stop:
                return


def make_dataloader(
    dataset: Dataset,
    batch_size: int,
    *,
    sampler: ShardedSampler | None = None,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    worker_init_fn: Callable[[int], None] | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` in the order of a :class:`ShardedSampler` (``loader.sampler``).

    ``sampler`` is built from ``shuffle`` and ``seed`` for one process when not given;
    pass one for distributed ranks, another epoch or a resumed position, and call its
    ``set_epoch`` / ``set_start`` between epochs: the loader can be kept (its persistent
    workers keep their loaded shard). ``drop_last`` drops this rank's incomplete last
    *batch*. ``pin_memory`` (page-locked batches, for a non-blocking copy) only helps a
    CUDA device: set it from the device the model trains on. Batches are the same, in
    the same order, for any ``num_workers`` (the sampler runs in the main process).
    ``worker_init_fn`` runs in each worker as it starts (the Trainer's keeps stop signals
    away from the workers). ``collate_fn`` replaces the default collation (it runs in the
    workers: the run machinery adds packing indices there for ``--unpad``).
    """
    if sampler is None:
        sampler = ShardedSampler(dataset, shuffle=shuffle, seed=seed)
    worker_options: dict[str, Any] = {}
    if num_workers > 0:
        # Persistent workers keep their loaded shard across epochs instead of re-forking;
        # a small prefetch bounds memory, since each worker already holds a whole shard.
        # A dataset that changes with the epoch (dynamic masking) needs workers started
        # afresh at each epoch: they hold a copy of it made when they start.
        worker_options = {"persistent_workers": not hasattr(dataset, "set_epoch"),
                          "prefetch_factor": 2, "worker_init_fn": worker_init_fn}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        collate_fn=collate_fn,
        # A private generator: creating a DataLoader iterator otherwise draws a seed from
        # the global torch RNG, which shifts dropout masks and breaks exact resume.
        generator=torch.Generator().manual_seed(sampler.seed + sampler.epoch),
        **worker_options,
    )


def move_batch(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy a batch to the device; ``non_blocking`` overlaps the copy when memory is pinned."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
