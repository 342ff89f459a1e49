"""Dynamic masking from static shards: the tokens it recovers, the masks it draws, and a
run that uses them (exact resume, DDP = one process)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import fit_killed_in_step, tiny_config

from bert_tutorial.config import DATA_SAMPLES, ConfigError, TrainConfig
from bert_tutorial.core.data import (
    IGNORE_INDEX,
    PretrainingDataset,
    ShardedSampler,
    make_dataloader,
)
from bert_tutorial.core.dynamic_masking import (
    DynamicMasking,
    DynamicMaskingDataset,
    dynamic_masking_of,
    read_generator,
    unmasked_tokens,
)
from bert_tutorial.create_data import masking as creator_masking
from bert_tutorial.create_data.cli import main as create_data
from bert_tutorial.pretrain.metrics import read_metrics
from bert_tutorial.pretrain.trainer import Trainer
from bert_tutorial.tokenization import VocabInfo, read_vocab

VOCAB_FILE = DATA_SAMPLES / "vocab.txt"
BOOK = DATA_SAMPLES / "corpus" / "pride-and-prejudice.txt"
ROWS = 1500  # of data_samples/train: enough for the shares to settle within a point or two


@pytest.fixture(scope="module")
def vocab() -> dict[str, int]:
    return read_vocab(VOCAB_FILE)


@pytest.fixture(scope="module")
def static() -> PretrainingDataset:
    return PretrainingDataset(DATA_SAMPLES / "train")


@pytest.fixture(scope="module")
def dynamic(static, vocab) -> DynamicMaskingDataset:
    return DynamicMaskingDataset(static, DynamicMasking(vocab, 0.15, static.max_predictions), seed=0)


def targets(sample: dict[str, torch.Tensor]) -> torch.Tensor:
    return sample["masked_lm_positions"][sample["masked_lm_ids"] != IGNORE_INDEX]


def test_recovered_tokens_are_the_creators_unmasked_tokens(tmp_path, monkeypatch):
    """create_data masks whole shards of unmasked instances: catch them just before."""
    unmasked = []
    real = creator_masking.mask_shard

    def keep_a_copy(arrays, *args, **kwargs):
        unmasked.append(arrays["input_ids"].copy())
        return real(arrays, *args, **kwargs)

    monkeypatch.setattr(creator_masking, "mask_shard", keep_a_copy)
    out = tmp_path / "shards"
    assert create_data(["--input", str(BOOK), "--gutenberg", "--documents", "0:4", "--vocab-file",
                        str(VOCAB_FILE), "--output-dir", str(out), "--shard-size", "150",
                        "--quiet"]) == 0
    data = PretrainingDataset(out)
    assert len(unmasked) == len(data.shards) >= 2 and len(data) > 200
    expected = torch.as_tensor(np.concatenate(unmasked).astype(np.int64))
    batch = next(iter(make_dataloader(data, len(data))))  # every row, in order
    assert not torch.equal(batch["input_ids"], expected)  # the stored rows are masked ...
    recovered = unmasked_tokens(batch["input_ids"], batch["masked_lm_positions"], batch["masked_lm_ids"])
    assert torch.equal(recovered, expected)  # ... and their tokens come back exactly


def test_a_read_keeps_the_tokens_and_fields_and_draws_the_creators_count(static, dynamic):
    for index in range(0, ROWS, 7):
        stored, fresh = static[index], dynamic[index]
        assert fresh.keys() == stored.keys()
        for name in ("token_type_ids", "attention_mask", "next_sentence_label"):
            assert torch.equal(fresh[name], stored[name])
        assert torch.equal(unmasked_tokens(fresh["input_ids"], fresh["masked_lm_positions"],
                                           fresh["masked_lm_ids"]),
                           unmasked_tokens(stored["input_ids"], stored["masked_lm_positions"],
                                           stored["masked_lm_ids"]))
        assert len(targets(fresh)) == len(targets(stored))  # round(length x 0.15), 1 to P
        # The dense labels and the sparse pair name the same targets.
        labelled = (fresh["labels"] != IGNORE_INDEX).nonzero().flatten()
        assert torch.equal(labelled, targets(fresh))
        assert torch.equal(fresh["labels"][labelled], fresh["masked_lm_ids"][: len(labelled)])


def corruption_shares(data, rows: range) -> dict[str, float]:
    """Where targets sit and what became of them, over ``rows`` of ``data``."""
    counts = dict.fromkeys(("mask", "kept", "random", "targets", "first_half"), 0)
    for index in rows:
        sample = data[index]
        positions = targets(sample)
        shown, original = sample["input_ids"][positions], sample["masked_lm_ids"][: len(positions)]
        counts["mask"] += int((shown == 103).sum())
        counts["kept"] += int((shown == original).sum())
        counts["random"] += int(((shown != 103) & (shown != original)).sum())
        counts["targets"] += len(positions)
        counts["first_half"] += int((positions < sample["attention_mask"].sum() / 2).sum())
    total = counts.pop("targets")
    return {name: value / total for name, value in counts.items()}


def test_the_statistics_match_static_masking(static, dynamic):
    stored, fresh = corruption_shares(static, range(ROWS)), corruption_shares(dynamic, range(ROWS))
    assert fresh["mask"] == pytest.approx(0.8, abs=0.015)
    assert fresh["kept"] == pytest.approx(0.1, abs=0.012)
    assert fresh["random"] == pytest.approx(0.1, abs=0.012)
    assert fresh["first_half"] == pytest.approx(0.5, abs=0.02)  # no position favoured
    for name in stored:
        assert fresh[name] == pytest.approx(stored[name], abs=0.02), name


def test_special_tokens_and_padding_are_never_targets(static, vocab):
    masking = DynamicMasking(vocab, 0.15, static.max_predictions)
    sample = static[0]
    tokens = unmasked_tokens(sample["input_ids"], sample["masked_lm_positions"], sample["masked_lm_ids"])
    short = sample["attention_mask"].clone()
    short[20:] = 0  # as if the sequence ended at 20 tokens
    for draw in range(300):
        fresh = masking(tokens, short, read_generator(0, 0, draw))
        chosen = targets(fresh)
        assert len(chosen) == 3  # round(20 x 0.15)
        assert (chosen < 20).all() and (chosen > 0).all()
        assert not torch.isin(tokens[chosen], torch.tensor([vocab["[CLS]"], vocab["[SEP]"]])).any()


def test_draws_are_keyed_by_seed_epoch_and_index(static, vocab, dynamic):
    first = targets(dynamic[5])
    assert torch.equal(targets(dynamic[5]), first)  # the same read, the same masks
    other_seed = DynamicMaskingDataset(static, dynamic.masking, seed=1)
    assert not torch.equal(targets(other_seed[5]), first)
    dynamic.set_epoch(1)
    try:
        assert not torch.equal(targets(dynamic[5]), first)
    finally:
        dynamic.set_epoch(0)
    # Over many sequences the masks of two epochs share only what chance gives.
    overlap = [len(np.intersect1d(targets(dynamic[i]), targets(other_seed[i]))) / len(targets(dynamic[i]))
               for i in range(200)]
    assert np.mean(overlap) < 0.3


def test_the_sampler_moves_the_dataset_to_its_epoch_and_workers_follow(dynamic):
    sampler = ShardedSampler(dynamic, shuffle=False)
    loader = make_dataloader(dynamic, 4, sampler=sampler, num_workers=1)
    try:
        sampler.set_epoch(0)
        epoch0 = next(iter(loader))["masked_lm_positions"]
        sampler.set_epoch(1)
        assert dynamic.epoch == 1
        epoch1 = next(iter(loader))["masked_lm_positions"]
        assert not torch.equal(epoch0, epoch1)  # the worker read epoch 1's masks
        in_process = torch.stack([dynamic[i]["masked_lm_positions"] for i in range(4)])
        assert torch.equal(epoch1, in_process)
    finally:
        dynamic.set_epoch(0)


def test_whole_word_masking_takes_every_piece_of_a_word(static, vocab):
    masking = DynamicMasking(vocab, 0.15, static.max_predictions, whole_word=True)
    info = VocabInfo.from_vocab(vocab)
    continues = torch.tensor(info.is_continuation)
    split_words = 0
    for index in range(300):
        sample = static[index]
        tokens = unmasked_tokens(sample["input_ids"], sample["masked_lm_positions"], sample["masked_lm_ids"])
        fresh = masking(tokens, sample["attention_mask"], read_generator(0, 0, index))
        chosen = set(targets(fresh).tolist())
        stored = len(targets(sample))
        assert stored - 4 <= len(chosen) <= stored  # a word that does not fit may be skipped
        length = int(sample["attention_mask"].sum())
        for i in range(1, length):  # a "##" piece is chosen exactly when the piece before it is
            if continues[tokens[i]] and tokens[i - 1] not in (info.cls_id, info.sep_id):
                assert (i in chosen) == (i - 1 in chosen)
                split_words += i in chosen
    assert split_words > 20  # words of several pieces were masked, whole


def test_a_rate_the_shards_were_not_made_with_is_refused_naming_theirs():
    data = PretrainingDataset(DATA_SAMPLES / "train")
    cfg = TrainConfig(masking="dynamic", masked_lm_prob=0.1)
    with pytest.raises(ConfigError, match=r"train_shard_00000.hdf5.*rate of about 0.15\), "
                                          r"--masked-lm-prob 0.1"):
        dynamic_masking_of(data, cfg)
    dynamic_masking_of(data, TrainConfig(masking="dynamic"))
    assert data.cached_shard is None  # the check keeps no shard in the run's memory


def test_a_vocabulary_without_mask_is_named(static, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(VOCAB_FILE.read_text().replace("[MASK]\n", "[MASQUE]\n"))
    cfg = TrainConfig(masking="dynamic", vocab_file=str(vocab))
    with pytest.raises(ConfigError, match=r"vocab.txt: vocabulary lacks the special token \[MASK\]; "
                                          "--masking dynamic needs it"):
        dynamic_masking_of(static, cfg)


@pytest.mark.parametrize("flag", [{"whole_word_masking": True}, {"masked_lm_prob": 0.2}])
def test_the_masking_flags_need_dynamic_masking(flag):
    name = "--" + next(iter(flag)).replace("_", "-")
    with pytest.raises(ConfigError, match=f"{name}.*needs --masking dynamic"):
        TrainConfig(**flag).validate()
    TrainConfig(masking="dynamic", **flag).validate()


# --- a run with dynamic masking --------------------------------------------------------------


def train_records(run) -> list[tuple[int, float]]:
    return [(r["step"], r["mlm_loss"]) for r in read_metrics(run) if r["kind"] == "train"]


@pytest.mark.parametrize(("objective", "workers"), [("mlm+nsp", 0), ("mlm", 1)])
def test_a_dynamic_run_sees_new_masks_each_epoch_and_resumes_exactly(tmp_path, monkeypatch, objective,
                                                                    workers):
    from bert_tutorial.pretrain import trainer as training

    overrides = dict(mask_fraction=0.15, masking="dynamic", epochs=3, save_every_steps=2, batch_size=8,
                     dropout=0.0, objective=objective, num_workers=workers)
    reference = Trainer(tiny_config(tmp_path / "a", **overrides))
    seen = []
    original = training.train_step

    def recording(model, micro, *args, **kwargs):
        seen.append({k: v.clone() for k, v in micro[0].items()})
        return original(model, micro, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(training, "train_step", recording)
        reference.fit()
    data = reference.train_data
    assert isinstance(data, DynamicMaskingDataset) and len(seen) == 3 * reference.steps_per_epoch
    # The batches the loop trained on are each epoch's reads, masked for that epoch: find a
    # row of epoch 0 again in epochs 1 and 2, by its unmasked tokens, with other masks.
    per_epoch = [seen[e * reference.steps_per_epoch:(e + 1) * reference.steps_per_epoch] for e in range(3)]

    def reads(batches):
        for batch in batches:
            tokens = unmasked_tokens(batch["input_ids"], batch["masked_lm_positions"], batch["masked_lm_ids"])
            yield from zip(map(bytes, tokens.numpy()), batch["masked_lm_positions"], strict=True)

    first = dict(reads(per_epoch[0]))
    for later in per_epoch[1:]:
        again = [(first[key], positions) for key, positions in reads(later) if key in first]
        assert len(again) > 10
        assert sum(not torch.equal(a, b) for a, b in again) > 0.9 * len(again)

    fit_killed_in_step(monkeypatch, tiny_config(tmp_path / "b", **overrides), 6)  # lost in step 6
    Trainer(tiny_config(tmp_path / "b", **overrides)).fit()  # the same command again
    assert train_records(tmp_path / "b" / "run") == train_records(tmp_path / "a" / "run")


def test_static_and_dynamic_runs_differ_only_in_their_masks(tmp_path):
    static_run = Trainer(tiny_config(tmp_path / "s", mask_fraction=0.15, epochs=1, dropout=0.0))
    dynamic_run = Trainer(tiny_config(tmp_path / "d", mask_fraction=0.15, epochs=1, dropout=0.0,
                                      masking="dynamic"))
    assert len(static_run.train_data) == len(dynamic_run.train_data)
    static_run.fit()
    dynamic_run.fit()
    first_eval = [[r["mlm_loss"] for r in read_metrics(run) if r["kind"] == "eval"][0]
                  for run in (tmp_path / "s" / "run", tmp_path / "d" / "run")]
    assert first_eval[0] == first_eval[1]  # the same model on the same (static) eval masks
    assert train_records(tmp_path / "s" / "run") != train_records(tmp_path / "d" / "run")
