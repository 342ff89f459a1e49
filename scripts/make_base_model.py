#!/usr/bin/env python
"""Make the small "pretrained" BERT in ``data_samples/base-model/`` with the project's own pipeline.

    python scripts/make_base_model.py                # shards, training, fp16 export, eval figures
    python scripts/make_base_model.py --export-only  # only re-export + re-evaluate the trained run
    python scripts/make_base_model.py --fresh        # delete runs/base-model-training/ first

Why: the tutorial's story is "start from a pretrained BERT, continue pre-training on new
text, and see it improve on held-out text", and no model hub is reachable offline. So the
starting model is made here, from the sample book split by chapter:

* chapters 1-40 (``--documents 0:40``): the base model's training shards, in
  ``runs/base-model-data/train/`` (not shipped, rebuilt by this script);
* chapters 41-55 (``--documents 40:55``): ``data_samples/continue/``, shipped, for the
  continued pre-training of notebook 05;
* chapters 56-61: ``data_samples/eval/``, the held-out shard (left untouched).

The base model is trained from scratch with ``python -m bert_tutorial.pretrain`` (the
default 2-layer, 128-wide model) into ``runs/base-model-training/``; its last checkpoint
is saved with ``save_pretrained`` in float16 (half the size of fp32) into
``data_samples/base-model/``, then loaded back, upcast to fp32 and evaluated on the
eval shard: those are the shipped model's figures. Only the command-line tools and a
few public functions are used, so the script survives refactoring of the package.

Everything is seeded and runs on the CPU by default, so the figures are the same on
every run. Running it again resumes (or reuses) the training run in
``runs/base-model-training/``; ``--fresh`` trains again from scratch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data_samples"
CORPUS = DATA / "corpus" / "pride-and-prejudice.txt"
VOCAB = DATA / "vocab.txt"
EVAL_DATA = DATA / "eval"
CONTINUE_DATA = DATA / "continue"
BASE_MODEL = DATA / "base-model"
BASE_DATA = ROOT / "runs" / "base-model-data" / "train"
TRAINING = ROOT / "runs" / "base-model-training"
if str(ROOT) not in sys.path:  # use this checkout's package, as the CLIs run from ROOT do
    sys.path.insert(0, str(ROOT))

#: Shard options shared with data_samples/README.md's regenerating commands.
#: Google's masking draws, as data_samples/train and eval (data_samples/README.md).
SHARD_OPTIONS = ["--max-seq-length", "128", "--seed", "12345", "--masking", "google",
                 "--shard-size", "2500"]
BASE_DOCUMENTS, BASE_DUPE_FACTOR = "0:40", 10  # chapters 1-40, ten passes (distinct masks)
CONTINUE_DOCUMENTS, CONTINUE_DUPE_FACTOR = "40:55", 5  # chapters 41-55
#: The base model's recipe: TrainConfig fields (the model size is TrainConfig's default).
RECIPE: dict[str, Any] = {
    "epochs": 6,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "warmup_fraction": 0.1,
    "seed": 42,
}
#: Files of the shipped folder; anything else save_pretrained leaves there is an error.
SHIPPED = ("config.json", "model.safetensors", "README.md")


def run_module(module: str, *args: str) -> None:
    """``python -m module args`` from the repository root; stop on failure."""
    command = [sys.executable, "-m", module, *args]
    print("$ python", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def make_shards(documents: str, dupe_factor: int, output_dir: Path, prefix: str) -> None:
    run_module(
        "bert_tutorial.create_data", "--input", str(CORPUS), "--gutenberg",
        "--documents", documents, "--vocab-file", str(VOCAB), "--dupe-factor", str(dupe_factor),
        *SHARD_OPTIONS, "--output-dir", str(output_dir), "--prefix", prefix, "--overwrite",
    )


def train(device: str) -> float:
    """Train (or resume, or find finished) the base model; return the wall time in seconds."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in RECIPE.items()]
    start = time.perf_counter()
    run_module(
        "bert_tutorial.pretrain", "--train-data", str(BASE_DATA), "--eval-data", str(EVAL_DATA),
        "--vocab-file", str(VOCAB), "--output-dir", str(TRAINING), "--device", device, *flags,
    )
    return time.perf_counter() - start


def export_fp16(checkpoint: Path) -> None:
    """Save the checkpoint's weights in float16 into BASE_MODEL (README.md is kept)."""
    from transformers import BertForPreTraining

    BASE_MODEL.mkdir(parents=True, exist_ok=True)
    for stale in ("config.json", "model.safetensors"):
        (BASE_MODEL / stale).unlink(missing_ok=True)
    model = BertForPreTraining.from_pretrained(checkpoint).half()
    model.save_pretrained(BASE_MODEL)
    (BASE_MODEL / "model.safetensors").chmod(0o644)  # save_pretrained leaves it 0600
    unexpected = sorted(p.name for p in BASE_MODEL.iterdir() if p.name not in SHIPPED)
    if unexpected:
        raise RuntimeError(f"{BASE_MODEL}: save_pretrained wrote unexpected files {unexpected}")


def evaluate_base_model(batch_size: int) -> dict[str, float]:
    """The shipped fp16 model, upcast to fp32, on the held-out eval shard (CPU)."""
    from transformers import BertForPreTraining

    from bert_tutorial.core.data import PretrainingDataset, make_dataloader
    from bert_tutorial.core.evaluation import evaluate
    from bert_tutorial.core.model import PretrainingModel
    from bert_tutorial.tokenization import read_vocab

    bert = BertForPreTraining.from_pretrained(BASE_MODEL).float()
    data = PretrainingDataset(str(EVAL_DATA), vocab_size=len(read_vocab(str(VOCAB))))
    loader = make_dataloader(data, batch_size, shuffle=False, seed=RECIPE["seed"])
    return evaluate(PretrainingModel(bert), loader, "cpu")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true",
                        help="delete runs/base-model-training/ and train from scratch")
    parser.add_argument("--export-only", action="store_true",
                        help="skip shards and training: re-export the finished run and evaluate")
    parser.add_argument("--device", default="cpu",
                        help="training device (default cpu: the shipped figures are CPU figures)")
    args = parser.parse_args(argv)

    from bert_tutorial.core.evaluation import frequency_baseline
    from bert_tutorial.pretrain.checkpoint import latest_checkpoint
    from bert_tutorial.tokenization import read_vocab

    seconds = None
    if not args.export_only:
        make_shards(CONTINUE_DOCUMENTS, CONTINUE_DUPE_FACTOR, CONTINUE_DATA, "continue")
        make_shards(BASE_DOCUMENTS, BASE_DUPE_FACTOR, BASE_DATA, "train")
        if args.fresh and TRAINING.exists():
            shutil.rmtree(TRAINING)
        seconds = train(args.device)
    checkpoint = latest_checkpoint(TRAINING)
    if checkpoint is None:
        raise SystemExit(f"{TRAINING}: no checkpoint; run without --export-only first")
    export_fp16(checkpoint)
    figures = evaluate_base_model(RECIPE["batch_size"])
    baseline = frequency_baseline(str(BASE_DATA), str(EVAL_DATA), len(read_vocab(str(VOCAB))))

    print(f"\nexported {checkpoint.relative_to(ROOT)} as float16 -> {BASE_MODEL.relative_to(ROOT)}")
    if seconds is not None:
        print(f"training command wall time: {seconds / 60:.1f} min")
    print("eval (chapters 56-61), fp16 weights upcast to fp32:")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))
    print(f"unigram-frequency baseline: MLM loss {baseline['mlm_loss']:.3f}, "
          f"most-frequent-token accuracy {baseline['mlm_accuracy']:.1%}")
    for path in sorted([*BASE_MODEL.glob("*"), *CONTINUE_DATA.glob("*.hdf5")]):
        print(f"{sha256(path)}  {path.stat().st_size:>9,} B  {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
