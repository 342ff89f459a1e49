"""Tests of shard discovery, lazy loading, label construction, sampling and bad input."""

from __future__ import annotations

import os
import pickle

import h5py
import numpy as np
import pytest
import torch
from shards import DROP, make_arrays

from bert_tutorial.core.data import (
    IGNORE_INDEX,
    PretrainingDataset,
    ShardedSampler,
    build_mlm_labels,
    find_shards,
    make_dataloader,
)
from bert_tutorial.hdf5_format import FIELDS

SIZES = (5, 7, 4)


# --- label construction -----------------------------------------------------------------


def test_labels_only_at_masked_positions():
    labels, ids = build_mlm_labels(np.array([1, 4, 0, 0]), np.array([17, 23, 0, 0]), seq_length=8)
    expected = np.full(8, IGNORE_INDEX)
    expected[1], expected[4] = 17, 23
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(ids, [17, 23, IGNORE_INDEX, IGNORE_INDEX])
    assert labels[0] == IGNORE_INDEX  # padded slots put no label on [CLS]


def test_labels_with_no_masks_are_all_ignored():
    labels, ids = build_mlm_labels(np.zeros(3, np.int32), np.zeros(3, np.int32), seq_length=6)
    assert (labels == IGNORE_INDEX).all() and labels.shape == (6,)
    assert (ids == IGNORE_INDEX).all()


def test_labels_batched_match_per_sample():
    arrays = make_arrays(num_samples=6, seed=3)
    pos, ids = arrays["masked_lm_positions"], arrays["masked_lm_ids"]
    batched, _ = build_mlm_labels(pos, ids, seq_length=16)
    for i in range(6):
        np.testing.assert_array_equal(batched[i], build_mlm_labels(pos[i], ids[i], 16)[0])


def test_sample_matches_shard(shard_factory):
    path = shard_factory(num_samples=6, seed=1)
    arrays = make_arrays(num_samples=6, seed=1)
    dataset = PretrainingDataset(path, vocab_size=50)
    assert len(dataset) == 6 and (dataset.max_seq_length, dataset.max_predictions) == (16, 4)
    for i in range(6):
        sample = dataset[i]
        assert all(v.dtype == torch.long for v in sample.values())
        np.testing.assert_array_equal(sample["input_ids"], arrays["input_ids"][i])
        np.testing.assert_array_equal(sample["token_type_ids"], arrays["segment_ids"][i])
        np.testing.assert_array_equal(sample["attention_mask"], arrays["input_mask"][i])
        assert sample["next_sentence_label"].shape == ()
        assert int(sample["next_sentence_label"]) == arrays["next_sentence_labels"][i]
        real = arrays["masked_lm_positions"][i] != 0
        labels = sample["labels"].numpy()
        np.testing.assert_array_equal(
            labels[arrays["masked_lm_positions"][i][real]], arrays["masked_lm_ids"][i][real]
        )
        assert (labels != IGNORE_INDEX).sum() == real.sum() and labels[0] == IGNORE_INDEX
        assert (sample["masked_lm_ids"].numpy()[~real] == IGNORE_INDEX).all()
    # Padding is not attended to: some sample is shorter than T.
    assert any(int(dataset[i]["attention_mask"].sum()) < 16 for i in range(6))


def test_reads_int64_shards(shard_factory):
    table = PretrainingDataset(shard_factory("a.hdf5", seed=2))
    wide = PretrainingDataset(shard_factory("b.hdf5", seed=2, dtype=np.int64))
    with h5py.File(table.paths[0]) as f:
        assert {name: f[name].dtype for name in FIELDS} == {
            n: np.dtype(d) for n, (d, _) in FIELDS.items()
        }
    for i in range(len(table)):
        for key, value in table[i].items():
            torch.testing.assert_close(value, wide[i][key])


# --- laziness -------------------------------------------------------------------------------


def test_find_shards(tmp_path, shard_factory):
    for name in ("b.hdf5", "a.h5", "c.hdf"):
        shard_factory(f"d/{name}")
    (tmp_path / "d" / "notes.txt").write_text("not a shard")
    found = find_shards(tmp_path / "d")
    assert [p.name for p in found] == ["a.h5", "b.hdf5", "c.hdf"]
    assert find_shards(found[1]) == [found[1]]
    assert find_shards([str(found[2]), found[0]]) == [found[2], found[0]]


def test_holds_one_shard_at_a_time(shard_factory):
    paths = [shard_factory(f"t/{k}.hdf5", num_samples=n, seed=k) for k, n in enumerate(SIZES)]
    dataset = PretrainingDataset(paths[0].parent)
    assert len(dataset) == sum(SIZES) and dataset.cached_shard is None  # metadata only
    for i in range(len(dataset)):
        dataset[i]
    assert dataset.cached_shard == 2
    assert len(dataset._cached_arrays["input_ids"]) == SIZES[2]
    arrays_held = [v for v in vars(dataset).values() if isinstance(v, dict)]
    assert arrays_held == [dataset._cached_arrays]
    # Pickled copies (DataLoader workers) start empty and hold no file handle.
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.cached_shard is None
    torch.testing.assert_close(clone[-1], dataset[len(dataset) - 1])


def test_global_index_maps_to_shards(shard_factory):
    paths = [shard_factory(f"t/{k}.hdf5", num_samples=n, seed=k) for k, n in enumerate(SIZES)]
    dataset = PretrainingDataset([str(p) for p in paths])
    assert dataset.locate(5) == (1, 0) and dataset.locate(15) == (2, 3)
    expected = make_arrays(num_samples=7, seed=1)["input_ids"][6]
    np.testing.assert_array_equal(dataset[11]["input_ids"], expected)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


# --- sampler ---------------------------------------------------------------------------------


class _Sized:
    """Just enough of a dataset for the sampler: shard sizes."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        self.shard_sizes = list(sizes)

    def __len__(self) -> int:
        return sum(self.shard_sizes)


SAMPLER_SIZES = (13, 7, 20, 1, 9)
N = sum(SAMPLER_SIZES)


def _order(epoch: int = 0, **kwargs) -> list[int]:
    sampler = ShardedSampler(_Sized(SAMPLER_SIZES), **kwargs)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_reproducible_and_epoch_dependent():
    assert _order(0, seed=1) == _order(0, seed=1)
    assert _order(0, seed=1) != _order(1, seed=1)
    assert _order(0, seed=1) != _order(0, seed=2)
    for epoch in range(3):
        assert sorted(_order(epoch, seed=1)) == list(range(N))


def test_sampler_is_shard_blocked():
    offsets = np.cumsum((0, *SAMPLER_SIZES))
    shard_of = np.searchsorted(offsets, _order(4, seed=0), side="right") - 1
    runs = 1 + np.count_nonzero(np.diff(shard_of))
    assert runs == len(SAMPLER_SIZES)  # every shard visited once, in one block
    assert list(dict.fromkeys(shard_of.tolist())) != list(range(len(SAMPLER_SIZES)))


def test_sampler_sequential_without_shuffle():
    assert _order(3, shuffle=False) == list(range(N))


@pytest.mark.parametrize("world_size", [2, 3])
def test_sampler_ranks_disjoint_equal(world_size):
    parts = [_order(2, seed=5, rank=r, world_size=world_size) for r in range(world_size)]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == N // world_size
    merged = [i for p in parts for i in p]
    assert len(set(merged)) == len(merged)
    # Strided: position k of rank r is position k * world_size + r of the one-process order.
    interleaved = [i for batch in zip(*parts, strict=True) for i in batch]
    assert interleaved == _order(2, seed=5)[: len(merged)]
    sampler = ShardedSampler(_Sized(SAMPLER_SIZES), rank=0, world_size=world_size)
    assert len(sampler) == N // world_size


def test_sampler_resume_gives_tail():
    full = _order(1, seed=3, rank=1, world_size=2)
    sampler = ShardedSampler(_Sized(SAMPLER_SIZES), seed=3, rank=1, world_size=2)
    sampler.set_epoch(1)
    sampler.set_start(11)
    assert len(sampler) == len(full) - 11
    assert list(sampler) == full[11:]
    sampler.set_epoch(2)  # the skip applies to the resumed epoch only
    assert len(list(sampler)) == len(full)
    with pytest.raises(ValueError, match="start"):
        sampler.set_start(len(full) + 1)


# --- DataLoader -----------------------------------------------------------------------------


def _batches(dataset, num_workers: int, epoch: int) -> list[dict[str, torch.Tensor]]:
    loader = make_dataloader(dataset, 4, shuffle=True, seed=7, num_workers=num_workers)
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_dataloader_workers_match_single_process(shard_factory):
    for k, n in enumerate(SIZES):
        path = shard_factory(f"t/{k}.hdf5", num_samples=n, seed=k)
    dataset = PretrainingDataset(path.parent, vocab_size=50)
    for epoch in (0, 1):
        single, multi = _batches(dataset, 0, epoch), _batches(dataset, 2, epoch)
        assert len(single) == len(multi) == -(-sum(SIZES) // 4)
        for a, b in zip(single, multi, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                torch.testing.assert_close(a[key], b[key])
    batch = single[0]
    assert batch["input_ids"].shape == (4, 16) and batch["next_sentence_label"].shape == (4,)
    assert batch["masked_lm_positions"].shape == (4, 4)


def test_dataloader_resume_and_ranks(shard_factory):
    for k, n in enumerate(SIZES):
        path = shard_factory(f"t/{k}.hdf5", num_samples=n, seed=k)
    dataset = PretrainingDataset(path.parent)

    def sampler(start: int = 0) -> ShardedSampler:
        """Rank 1 of 2 in epoch 3, ``start`` samples in (as the Trainer moves it on resume)."""
        made = ShardedSampler(dataset, shuffle=True, seed=1, rank=1, world_size=2)
        made.set_epoch(3)
        made.set_start(start)
        return made

    full = torch.cat([b["input_ids"] for b in make_dataloader(dataset, 2, sampler=sampler())])
    tail = torch.cat([b["input_ids"] for b in make_dataloader(dataset, 2, sampler=sampler(4))])
    assert len(full) == sum(SIZES) // 2
    torch.testing.assert_close(tail, full[4:])
    loader = make_dataloader(dataset, 2, drop_last=True, sampler=sampler())
    assert len(loader) == (sum(SIZES) // 2) // 2


def test_uneven_eval_shares_cover_every_sample_once(shard_factory):
    for k, n in enumerate(SIZES):
        path = shard_factory(f"e/{k}.hdf5", num_samples=n, seed=k)
    dataset = PretrainingDataset(path.parent)
    for world in (2, 3, 8):
        parts = [list(ShardedSampler(dataset, shuffle=False, rank=r, world_size=world, even=False))
                 for r in range(world)]
        assert sorted(i for part in parts for i in part) == list(range(len(dataset)))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert [len(ShardedSampler(dataset, shuffle=False, rank=r, world_size=world, even=False))
                for r in range(world)] == [len(p) for p in parts]


# --- bad input -------------------------------------------------------------------------------


def _expect_error(path_or_dataset, *fragments: str, vocab_size: int | None = None):
    """Build the dataset and read every sample; the ValueError must name all fragments."""
    with pytest.raises(ValueError) as info:
        dataset = PretrainingDataset(path_or_dataset, vocab_size=vocab_size)
        for i in range(len(dataset)):
            dataset[i]
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.parametrize("field", list(FIELDS))
def test_missing_field(shard_factory, field):
    _expect_error(shard_factory(**{field: DROP}), "shard.hdf5", field)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("input_ids", np.zeros(16)),  # wrong ndim
        ("next_sentence_labels", np.zeros((8, 1))),
        ("input_mask", np.ones((8, 15))),  # width differs from input_ids
        ("segment_ids", np.zeros((7, 16))),  # length differs
        ("masked_lm_ids", np.zeros((8, 3))),  # differs from masked_lm_positions
        ("next_sentence_labels", np.zeros(9)),
    ],
)
def test_wrong_shape(shard_factory, field, bad):
    _expect_error(shard_factory(**{field: bad}), "shard.hdf5", field)


def test_position_beyond_sequence(shard_factory):
    positions = make_arrays()["masked_lm_positions"]
    positions[3, 0] = 16
    _expect_error(shard_factory(masked_lm_positions=positions), "shard.hdf5", "masked_lm_positions")


@pytest.mark.parametrize("field", ["input_ids", "masked_lm_ids"])
def test_id_beyond_vocab(shard_factory, field):
    values = make_arrays()[field]
    values[2, 1] = 50
    path = shard_factory(**{field: values})
    _expect_error(path, "shard.hdf5", field, "50", vocab_size=50)
    PretrainingDataset(path, vocab_size=51)[2]  # fine with a large enough vocabulary


def test_mismatched_shards(shard_factory):
    shard_factory("d/a.hdf5", seq_length=16)
    path = shard_factory("d/b.hdf5", seq_length=32)
    _expect_error(path.parent, "a.hdf5", "b.hdf5", "input_ids")


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "nowhere", tmp_path / "nowhere.hdf5"):
        with pytest.raises(ValueError, match=str(bad.name)):
            find_shards(bad)
        _expect_error(bad, str(bad))
    with pytest.raises(ValueError):
        find_shards([])


def test_text_file_renamed(tmp_path):
    path = tmp_path / "notes.hdf5"
    path.write_text("this is not HDF5\n" * 10)
    _expect_error(path, "notes.hdf5", "HDF5")


def test_truncated_file(shard_factory):
    path = shard_factory(num_samples=64, seq_length=64, max_predictions=10)
    os.truncate(path, path.stat().st_size // 2)
    _expect_error(path, "shard.hdf5", "HDF5")


def test_truncated_after_construction(shard_factory):
    """A file that breaks between inspection and load still fails naming the file."""
    path = shard_factory(num_samples=64, seq_length=64, max_predictions=10)
    dataset = PretrainingDataset(path)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(ValueError, match="shard.hdf5"):
        dataset[0]


@pytest.mark.parametrize("where", [0.5, 0.9])
def test_corrupted_bytes(shard_factory, where):
    """Garbage inside a file of the right size (metadata or data chunks) names the file."""
    path = shard_factory(num_samples=64, seq_length=64, max_predictions=10)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(int(size * where))
        f.write(b"\xff" * (size // 10))
    _expect_error(path, "shard.hdf5")


def test_corrupted_data_chunk(shard_factory):
    """Structure intact, compressed data broken: found at load time, naming file and field."""
    path = shard_factory(num_samples=64, seq_length=64, max_predictions=10)
    with h5py.File(path) as f:
        chunk = f["segment_ids"].id.get_chunk_info(0)
    with open(path, "r+b") as f:
        f.seek(chunk.byte_offset)
        f.write(b"\xff" * chunk.size)
    dataset = PretrainingDataset(path)  # metadata still fine
    with pytest.raises(ValueError, match="shard.hdf5.*segment_ids"):
        dataset[0]


# --- issue 13, item 8: values that would train silently wrong -------------------------------


def _masked_row(arrays: dict) -> int:
    """A row with at least two masked positions and some padding."""
    positions, mask = arrays["masked_lm_positions"], arrays["input_mask"]
    for row in range(len(positions)):
        if (positions[row] != 0).sum() >= 2 and not mask[row].all():
            return row
    raise AssertionError("no suitable row in the generated shard")


def test_fault_08_masked_position_on_padding(shard_factory):
    arrays = make_arrays()
    row = _masked_row(arrays)
    arrays["masked_lm_positions"][row, 0] = arrays["input_mask"].shape[1] - 1  # the last: padding
    arrays["masked_lm_positions"][row].sort()
    path = shard_factory(**arrays)
    _expect_error(path, "shard.hdf5", "masked_lm_positions", "points at padding", f"row {row}")


def test_fault_08_all_zero_input_mask(shard_factory):
    arrays = make_arrays()
    arrays["input_mask"][5] = 0
    arrays["masked_lm_positions"][5] = 0  # no masked position either: only the mask is wrong
    _expect_error(shard_factory(**arrays), "shard.hdf5", "input_mask", "all 0 in row 5")


def test_fault_08_duplicate_positions_in_a_row(shard_factory):
    arrays = make_arrays()
    row = _masked_row(arrays)
    used = np.flatnonzero(arrays["masked_lm_positions"][row])
    reversed_order = {k: v.copy() for k, v in arrays.items()}
    reversed_order["masked_lm_positions"][row, used] = arrays["masked_lm_positions"][row, used[::-1]]
    reversed_order["masked_lm_ids"][row, used] = arrays["masked_lm_ids"][row, used[::-1]]
    PretrainingDataset(shard_factory("unsorted.hdf5", **reversed_order))[row]  # unusual, but fine
    arrays["masked_lm_positions"][row, used[1]] = arrays["masked_lm_positions"][row, used[0]]
    _expect_error(shard_factory(**arrays), "shard.hdf5", "repeats position", f"row {row}")


def test_fault_08_no_prediction_slots(shard_factory):
    none = np.zeros((8, 0), np.int32)
    path = shard_factory(masked_lm_positions=none, masked_lm_ids=none)
    _expect_error(path, "shard.hdf5", "masked_lm_positions", "width 0", "MLM loss would be 0")


def test_fault_08_virtual_dataset_with_a_missing_source(tmp_path, shard_factory):
    source = shard_factory("source.hdf5")
    arrays = make_arrays()
    path = tmp_path / "virtual.hdf5"
    with h5py.File(path, "w") as f:
        for name, values in arrays.items():
            if name == "input_ids":
                layout = h5py.VirtualLayout(shape=values.shape, dtype=np.int32)
                layout[:] = h5py.VirtualSource(source.name, "input_ids", shape=values.shape)
                f.create_virtual_dataset(name, layout)
            else:
                f.create_dataset(name, data=values)
    assert PretrainingDataset(path)[0]["input_ids"].any()  # with its source: reads the data
    source.unlink()
    _expect_error(path, "virtual.hdf5", "input_ids", "virtual dataset", "source.hdf5", "missing")


def test_fault_08_a_symlinked_duplicate_shard_is_refused(shard_factory):
    path = shard_factory("d/a.hdf5")
    (path.parent / "b.hdf5").symlink_to(path)
    with pytest.raises(ValueError, match=r"b.hdf5: the same file as .*a.hdf5 \(a symlink or hard link\)"):
        find_shards(path.parent)
    os.link(path, path.parent / "c.hdf5")
    with pytest.raises(ValueError, match=r"the same file as"):
        find_shards([path, path.parent / "c.hdf5"])
