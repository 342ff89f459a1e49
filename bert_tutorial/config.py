"""One dataclass for every knob of a run, so a run is described by a single object.

The defaults train a small BERT from scratch on ``data_samples/`` on a laptop CPU
in a few minutes. A real run changes a handful of fields (see ``TrainConfig.full``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: Root of the repository checkout (``bert_tutorial/..``); sample data lives beside the package.
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_SAMPLES = REPO_ROOT / "data_samples"

Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class TrainConfig:
    # --- data -------------------------------------------------------------------------------
    train_data: str = str(DATA_SAMPLES / "train")
    eval_data: str | None = str(DATA_SAMPLES / "eval")
    vocab_file: str = str(DATA_SAMPLES / "vocab.txt")
    num_workers: int = 0
    #: Cap on eval batches (None = whole eval set); keeps in-training evaluation cheap.
    eval_max_batches: int | None = None
    #: Also evaluate every N optimizer steps (0 = only before training and at epoch ends),
    #: so that train and eval curves share a cadence.
    eval_every_steps: int = 0

    # --- model ------------------------------------------------------------------------------
    #: A hub name ("bert-base-uncased", needs network) or a local folder saved with
    #: ``save_pretrained``. None builds a fresh model from the size fields below.
    model_name_or_path: str | None = None
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    #: Hidden and attention dropout of a fresh model (a pretrained one keeps its own).
    dropout: float = 0.1
    #: "sdpa" (fused attention kernels) or "eager" (the reference implementation).
    attn_implementation: str = "sdpa"

    # --- optimisation -----------------------------------------------------------------------
    epochs: int = 3
    #: Per-device micro-batch; the global batch is this x grad_accum_steps x world size.
    batch_size: int = 32
    grad_accum_steps: int = 1
    #: None = the default for the kind of run, see ``lr``.
    learning_rate: float | None = None
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-6
    #: Stop after this many optimizer steps (None = run all epochs).
    max_steps: int | None = None
    seed: int = 42

    # --- speed ------------------------------------------------------------------------------
    device: str = "auto"
    #: "auto" = bf16 autocast on a GPU that supports it, else fp16 + GradScaler on GPU, fp32 on CPU.
    precision: Precision = "auto"
    #: Run the MLM decoder only on masked positions instead of all T positions.
    sparse_mlm_head: bool = True
    #: Fused AdamW kernel (CUDA only). None = use it when on CUDA.
    fused_adamw: bool | None = None
    compile: bool = False

    # --- output -----------------------------------------------------------------------------
    output_dir: str = "runs/pretrain"
    #: Checkpoint every N optimizer steps in addition to every epoch end (0 = epoch ends only).
    save_every_steps: int = 0
    keep_last_checkpoints: int = 2
    log_every_steps: int = 10
    #: Redraw loss_curves.png after every evaluation.
    plots: bool = True
    #: Continue from the newest checkpoint in output_dir if there is one.
    resume: bool = True
    #: Stop with an error after this many consecutive non-finite losses.
    max_bad_steps: int = 5

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)  # JSON and argparse give lists

    @classmethod
    def full(cls, **overrides: Any) -> TrainConfig:
        """A real continued-pre-training run: bert-base-uncased (needs the hub), T=512 shards."""
        base = dict(
            model_name_or_path="bert-base-uncased",
            batch_size=32,
            grad_accum_steps=8,
            learning_rate=1e-4,
            epochs=1,
            # Loader workers compete with the main process for cores: Colab has 2 vCPUs.
            num_workers=min(4, max(1, (os.cpu_count() or 2) - 1)),
            save_every_steps=1000,
            eval_max_batches=200,
        )
        return cls(**{**base, **overrides})

    @property
    def lr(self) -> float:
        """The peak learning rate: ``learning_rate`` or a default that suits the run.

        Continued pre-training of a pretrained BERT gets 1e-4 (the original tutorial's
        1e-3 makes bert-base diverge); the small model trained from scratch gets 1e-3,
        which it tolerates and which learns visibly within a few CPU minutes.
        """
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-4 if self.model_name_or_path else 1e-3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {sorted(unknown)}")
        return cls(**values)
