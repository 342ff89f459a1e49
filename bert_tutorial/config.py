"""One dataclass for every knob of a run, so a run is described by a single object.

The defaults train a small BERT from scratch on ``data_samples/`` on a laptop CPU
in a few minutes. A real run changes a handful of fields (see ``TrainConfig.full``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: Root of the repository checkout (``bert_tutorial/..``); sample data lives beside the package.
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_SAMPLES = REPO_ROOT / "data_samples"

Objective = Literal["mlm+nsp", "mlm"]
Masking = Literal["static", "dynamic"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Attention = Literal["sdpa", "eager"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
#: What ``--device`` takes (torch device names), checked before torch is imported.
DEVICE_PATTERN = re.compile(r"auto|cpu|(cuda|mps|xpu)(:\d+)?")
#: Smallest normal float32: a smaller Adam epsilon is 0 (or subnormal) in the optimizer's state.
FLOAT32_TINY = 1.1754943508222875e-38
#: Largest seed every consumer accepts (torch seeds are 64-bit, numpy's any size).
MAX_SEED = 2**63 - 1


#: BERT's masking rate, create_data's default.
_MASKED_LM_PROB = 0.15


class ConfigError(ValueError):
    """A ``TrainConfig`` value outside its allowed range; the message names the flag."""


@dataclass
class TrainConfig:
    """Every knob of a run; ``metadata["help"]`` is the help of its ``python -m bert_tutorial.pretrain`` flag."""

    # --- data -------------------------------------------------------------------------------
    train_data: str = field(default=str(DATA_SAMPLES / "train"), metadata={
        "help": "Training shards: a folder of .hdf5 files or one file."})
    eval_data: str | None = field(default=str(DATA_SAMPLES / "eval"), metadata={
        "help": "Held-out shards, evaluated when a run starts (not on resume), at epoch ends and every "
                'eval_every_steps; None ("none" on the command line) = no evaluation.'})
    vocab_file: str = field(default=str(DATA_SAMPLES / "vocab.txt"), metadata={
        "help": "The WordPiece vocabulary the shards were made with (its size is checked against the model)."})
    num_workers: int = field(default=0, metadata={
        "help": "DataLoader worker processes per rank (0 = read in the training process)."})
    eval_max_batches: int | None = field(default=None, metadata={
        "help": "Cap on eval batches (None = whole eval set); keeps in-training evaluation cheap."})
    eval_every_steps: int = field(default=0, metadata={
        "help": "Also evaluate every N optimizer steps (0 = only before training and at epoch ends), "
                "so that train and eval curves share a cadence."})

    # --- objective and masking ----------------------------------------------------------------
    objective: Objective = field(default="mlm+nsp", metadata={
        "help": '"mlm+nsp": masked LM and next-sentence prediction, as BERT (and the original '
                'tutorial); "mlm": masked LM only, as RoBERTa and most continued pre-training today '
                "(the NSP head is frozen and not evaluated)."})
    masking: Masking = field(default="static", metadata={
        "help": '"static": the masks stored in the shards, the same at every epoch; "dynamic": new '
                "masks each time a sequence is read, drawn from (seed, epoch, sequence) with "
                "create_data's rule. Evaluation always uses the stored masks."})
    masked_lm_prob: float = field(default=_MASKED_LM_PROB, metadata={
        "help": "With --masking dynamic: the share of each sequence's tokens to predict (the rate "
                "the shards were made with; checked against them)."})
    whole_word_masking: bool = field(default=False, metadata={
        "help": "With --masking dynamic: mask every piece of a word together."})

    # --- model ------------------------------------------------------------------------------
    model_name_or_path: str | None = field(default=None, metadata={
        "help": 'A hub name ("bert-base-uncased", needs network) or a local folder saved with '
                "save_pretrained. None builds a fresh model from the size fields below."})
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    dropout: float = field(default=0.1, metadata={
        "help": "Hidden and attention dropout of a fresh model (a pretrained one keeps its own)."})
    attention_dropout: float | None = field(default=None, metadata={
        "help": "Dropout on the attention probabilities; None = the model's own (0.1 in BERT; "
                "a fresh model takes --dropout)."})
    attn_implementation: Attention = field(default="sdpa", metadata={
        "help": '"sdpa" (fused attention kernels) or "eager" (the reference implementation).'})

    # --- optimisation -----------------------------------------------------------------------
    epochs: int = 3
    batch_size: int = field(default=32, metadata={
        "help": "Per-device micro-batch; the global batch is this x grad_accum_steps x world size."})
    grad_accum_steps: int = 1
    learning_rate: float | None = field(default=None, metadata={
        "help": "Peak learning rate; None = 1e-4 when continuing a pretrained model, 1e-3 from scratch."})
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float | None = field(default=1.0, metadata={
        "help": "Clip the gradient's global norm to this; None (or inf) = no clipping."})
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-6
    max_steps: int | None = field(default=None, metadata={
        "help": "Stop after this many optimizer steps (None = run all epochs)."})
    seed: int = 42

    # --- speed ------------------------------------------------------------------------------
    device: str = field(default="auto", metadata={
        "help": '"auto" = this process\'s GPU if there is one, else "cpu"; or a torch device ("cuda:1").'})
    precision: Precision = field(default="auto", metadata={
        "help": '"auto" = bf16 autocast on a GPU that supports it, else fp16 + GradScaler on GPU, '
                "fp32 on CPU."})
    sparse_mlm_head: bool = field(default=True, metadata={
        "help": "Run the MLM decoder only on masked positions instead of all T positions."})
    fused_adamw: bool | None = field(default=None, metadata={
        "help": "Fused AdamW kernel (CUDA only). None = use it when on CUDA."})
    compile: bool | None = field(default=False, metadata={
        "help": "torch.compile the model (TorchInductor; needs a C++ compiler on a CPU). None = "
                "compile on CUDA only: on a GPU it measured a third more sequences/s "
                "(benchmarks/README.md); on a CPU the first steps take minutes to compile, for "
                "little gain."})
    compile_mode: CompileMode = field(default="default", metadata={
        "help": 'torch.compile\'s mode: "reduce-overhead" replays each step as CUDA graphs (no '
                "kernel launch gaps; the step marks each micro-batch and keeps the gradients "
                'outside the graphs\' memory), "max-autotune" also searches GEMM kernels (minutes '
                "of compiling)."})
    fused_qkv: bool = field(default=False, metadata={
        "help": "Compute each layer's query, key and value in one matrix multiply (the three "
                "weights concatenated at each forward; parameters and checkpoints unchanged)."})
    half_precision_layernorm: bool = field(default=False, metadata={
        "help": "Under bf16/fp16 autocast, give LayerNorm's output in that dtype (autocast keeps "
                "it fp32), so the residual stream between layers is half precision: half the "
                "memory traffic of the elementwise kernels."})
    fold_clipping: bool = field(default=False, metadata={
        "help": "Clip the gradient inside the fused AdamW kernel (as a gradient scale) instead "
                "of rescaling every gradient first: one pass over the gradients fewer. Needs the "
                "fused AdamW (on CUDA by default, --fused-adamw elsewhere); with an fp16 "
                "GradScaler the clipping stays separate."})
    unpad: bool = field(default=False, metadata={
        "help": "Run the encoder on the real tokens only: the loader packs each batch's tokens "
                "(padded to a few fixed counts). Attention runs per sequence with flash "
                "attention's variable-length kernel on a GPU of compute capability >= 8.0 in "
                "bf16/fp16 with --attention-dropout 0 (that kernel has no attention dropout); "
                "otherwise the tokens go back to their padded rows for attention only."})

    # --- output -----------------------------------------------------------------------------
    output_dir: str = "runs/pretrain"
    save_every_steps: int = field(default=0, metadata={
        "help": "Checkpoint every N optimizer steps in addition to every epoch end (0 = epoch ends only)."})
    keep_last_checkpoints: int = 2
    log_every_steps: int = 10
    plots: bool = field(default=True, metadata={
        "help": "Redraw loss_curves.png after every evaluation."})
    resume: bool = field(default=True, metadata={
        "help": "Continue from the newest checkpoint in output_dir if there is one."})
    max_bad_steps: int = field(default=5, metadata={
        "help": "Stop with an error after this many consecutive non-finite losses."})
    allow_data_change: bool = field(default=False, metadata={
        "help": "Resume even though the data differ from those the run started with (shards added, "
                "removed or changed): the step count and LR schedule are then recomputed."})

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)  # JSON and argparse give lists

    @classmethod
    def full(cls, seq_length: int | None = None, **overrides: Any) -> TrainConfig:
        """A real continued-pre-training run of bert-base-uncased (needs the hub) on a GPU.

        It takes the fast path the benchmarks measured (benchmarks/README.md, "On a GPU"):
        ``torch.compile`` on CUDA (``compile=None``: a CPU run with these settings stays
        uncompiled), loader workers, and the largest measured micro-batch for the shards'
        length ``seq_length`` (T; the CLI's ``--full`` reads it from ``--train-data``), with
        the global batch kept at 256 sequences through accumulation (see
        :func:`full_micro_batch`). ``seq_length=None`` (T not known) takes the split that
        fits T=512.
        """
        batch_size, grad_accum_steps = full_micro_batch(seq_length)
        base = dict(
            model_name_or_path="bert-base-uncased",
            batch_size=batch_size,
            grad_accum_steps=grad_accum_steps,
            learning_rate=1e-4,
            epochs=1,
            # Loader workers compete with the main process for cores: Colab has 2 vCPUs.
            num_workers=min(4, max(1, (os.cpu_count() or 2) - 1)),
            compile=None,  # on CUDA only: see the field's help
            save_every_steps=1000,
            eval_max_batches=200,
        )
        return cls(**{**base, **overrides})

    @property
    def lr(self) -> float:
        """The peak learning rate: ``learning_rate`` or a default that suits the run.

        Continued pre-training of a pretrained BERT gets 1e-4, BERT's own peak rate at
        batch 256 (the original tutorial used ten times that); the small model trained from scratch gets 1e-3,
        which it tolerates and which learns visibly within a few CPU minutes.
        """
        if self.learning_rate is not None:
            return self.learning_rate
        return default_learning_rate(self.model_name_or_path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path) -> None:
        """Write the config atomically: a crash never leaves a truncated file behind."""
        from .safe_io import write_text_atomic  # keeps this module free of heavy imports

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def validate(self) -> None:
        """Raise :class:`ConfigError` listing every value outside its allowed range.

        Called before anything is written, so a bad value never leaves a half-made run
        folder behind, and never trains silently (a negative clip norm is gradient
        ascent; a zero learning rate or clip norm never learns). Each line names the
        flag and the range, e.g. ``--max-grad-norm (max_grad_norm) must be > 0 ...``.
        """
        problems = [p for check in (_integer_problems, _float_problems, _other_problems)
                    for p in check(self)]
        if problems:
            raise ConfigError("invalid training configuration:\n  " + "\n  ".join(problems))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {sorted(unknown)}")
        return cls(**values)


#: Integer fields -> their smallest allowed value (None-able ones also take None).
_MIN_INT: dict[str, int] = {
    "batch_size": 1, "grad_accum_steps": 1, "epochs": 1, "log_every_steps": 1, "max_bad_steps": 1,
    "hidden_size": 1, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 1,
    "max_position_embeddings": 1, "num_workers": 0, "eval_every_steps": 0, "save_every_steps": 0,
    "keep_last_checkpoints": 0, "seed": 0, "max_steps": 1, "eval_max_batches": 1,
}
_NONE_MEANS = {"max_steps": "run all epochs", "eval_max_batches": "the whole eval set",
               "learning_rate": "the default for the run", "max_grad_norm": "no clipping",
               "attention_dropout": "the model's own"}


def _flag(name: str) -> str:
    """How a field is spelt on the command line and in Python, for error messages."""
    return f"--{name.replace('_', '-')} ({name})"


def _or_none(name: str) -> str:
    return f", or None for {_NONE_MEANS[name]}" if name in _NONE_MEANS else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _integer_problems(cfg: TrainConfig) -> list[str]:
    problems = []
    for name, low in _MIN_INT.items():
        value = getattr(cfg, name)
        if value is None and name in _NONE_MEANS:
            continue
        top = MAX_SEED if name == "seed" else None
        if not _is_int(value) or value < low or (top is not None and value > top):
            allowed = f"an integer >= {low}" + (f" and <= {top}" if top else "")
            problems.append(f"{_flag(name)} must be {allowed}{_or_none(name)}, got {value!r}")
    heads = cfg.num_attention_heads
    if _is_int(cfg.hidden_size) and _is_int(heads) and heads >= 1 and cfg.hidden_size % heads:
        problems.append(
            f"{_flag('hidden_size')} must be a multiple of {_flag('num_attention_heads')}: "
            f"{cfg.hidden_size} is not divisible by {heads}"
        )
    return problems


def _float_problems(cfg: TrainConfig) -> list[str]:
    """Ranges of the real-valued fields: (low, low inclusive?, high, high inclusive?)."""
    ranges: dict[str, tuple[float, bool, float, bool]] = {
        "learning_rate": (0.0, False, math.inf, False),
        "max_grad_norm": (0.0, False, math.inf, True),  # inf: no clipping
        "dropout": (0.0, True, 1.0, False),
        "attention_dropout": (0.0, True, 1.0, False),
        "masked_lm_prob": (0.0, False, 1.0, False),
        "warmup_fraction": (0.0, True, 1.0, False),
        "weight_decay": (0.0, True, math.inf, False),
        "adam_eps": (0.0, False, math.inf, False),
    }
    problems = []
    for name, (low, low_in, high, high_in) in ranges.items():
        value = getattr(cfg, name)
        if value is None and name in _NONE_MEANS:
            continue
        ok = _is_real(value) and not math.isnan(value) and (value >= low if low_in else value > low) \
            and (value <= high if high_in else value < high)
        if not ok:
            allowed = ("in " + ("[" if low_in else "(") + f"{low:g}, {high:g}" + ("]" if high_in else ")")
                       if high < math.inf else (">= " if low_in else "> ") + f"{low:g}")
            problems.append(f"{_flag(name)} must be {allowed}{_or_none(name)}, got {value!r}")
    eps = cfg.adam_eps
    if _is_real(eps) and 0 < eps < FLOAT32_TINY:  # ranges above passed it: 0 in fp32
        problems.append(f"{_flag('adam_eps')} must be >= {FLOAT32_TINY:.3g} (smaller is 0 or "
                        f"subnormal in fp32, the optimizer's precision: 0/0 = NaN weights), "
                        f"got {eps!r}")
    betas = tuple(cfg.adam_betas)
    if len(betas) != 2 or not all(_is_real(b) and 0.0 <= b < 1.0 for b in betas):
        problems.append(f"{_flag('adam_betas')} must be two numbers in [0, 1), got {cfg.adam_betas!r}")
    return problems


def _other_problems(cfg: TrainConfig) -> list[str]:
    problems = []
    if cfg.compile is not None and not isinstance(cfg.compile, bool):
        problems.append(f"{_flag('compile')} must be True, False or None (on CUDA only), got "
                        f"{cfg.compile!r}")
    for name in ("whole_word_masking", "fused_qkv", "half_precision_layernorm", "fold_clipping", "unpad"):
        if not isinstance(getattr(cfg, name), bool):
            problems.append(f"{_flag(name)} must be True or False, got {getattr(cfg, name)!r}")
    if cfg.whole_word_masking is True and cfg.masking != "dynamic":
        problems.append(f"{_flag('whole_word_masking')} needs --masking dynamic: static masks are "
                        "those stored in the shards (create_data --whole-word-masking makes them)")
    if cfg.masking != "dynamic" and cfg.masked_lm_prob != _MASKED_LM_PROB:
        problems.append(f"{_flag('masked_lm_prob')} needs --masking dynamic: static masks are "
                        "those stored in the shards (create_data --masked-lm-prob sets their rate)")
    if cfg.compile is False and cfg.compile_mode != "default":
        problems.append(f"{_flag('compile_mode')} {cfg.compile_mode} needs --compile (or "
                        "--compile none: compiled on CUDA only)")
    if cfg.fold_clipping is True and cfg.fused_adamw is False:
        problems.append(f"{_flag('fold_clipping')} clips inside the fused AdamW kernel: it "
                        "cannot go with --no-fused-adamw")
    for name in ("unpad", "fused_qkv"):
        if getattr(cfg, name) is True and cfg.sparse_mlm_head is False:
            problems.append(f"{_flag(name)} needs --sparse-mlm-head: its encoder returns the "
                            "masked positions' hidden states only")
        if getattr(cfg, name) is True and cfg.attn_implementation == "eager":
            problems.append(f"{_flag(name)} runs its own attention (SDPA, or flash's varlen "
                            "kernel): it cannot go with --attn-implementation eager")
    for name, allowed in (("precision", Precision), ("attn_implementation", Attention),
                          ("objective", Objective), ("masking", Masking),
                          ("compile_mode", CompileMode)):
        choices = typing.get_args(allowed)
        if getattr(cfg, name) not in choices:
            problems.append(f"{_flag(name)} must be one of {', '.join(choices)}, "
                            f"got {getattr(cfg, name)!r}")
    if isinstance(cfg.device, str) and cfg.device.strip() and not DEVICE_PATTERN.fullmatch(cfg.device):
        problems.append(f"{_flag('device')} must be auto, cpu, cuda, cuda:N, mps or xpu[:N] "
                        f"(a torch device), got {cfg.device!r}")
    if (isinstance(cfg.vocab_file, str | os.PathLike) and str(cfg.vocab_file).strip()
            and not Path(cfg.vocab_file).is_file()):
        problems.append(f"{_flag('vocab_file')}: no such file: {cfg.vocab_file}")
    for name in ("train_data", "vocab_file", "output_dir", "device"):
        value = getattr(cfg, name)
        if not isinstance(value, str | os.PathLike) or not str(value).strip():
            problems.append(f"{_flag(name)} must be a non-empty path or name, got {value!r}")
    return problems


#: The global batch of ``TrainConfig.full`` (sequences per optimizer step on one GPU): BERT's.
FULL_GLOBAL_BATCH = 256


def full_micro_batch(seq_length: int | None) -> tuple[int, int]:
    """``(batch_size, grad_accum_steps)`` of ``TrainConfig.full`` for shards of length T.

    The global batch is 256 either way; only its split changes, and with it the speed, not
    the result (the step normalises by the step's masked tokens, so the loss and gradients
    are those of one batch of 256). At T <= 128 micro-batches of 256 measured +14 %
    sequences/s over micro-batches of 128 on an H100 (compiled; 12.7 GiB at the peak); at
    T = 512 the measured micro-batch is 32 (7.1 GiB), so 32 x 8. Lengths between were not
    measured and get 32 x 8, which fits any GPU the T=512 split fits.
    """
    if seq_length is not None and seq_length <= 128:
        return FULL_GLOBAL_BATCH, 1
    return 32, FULL_GLOBAL_BATCH // 32


def default_learning_rate(model_name_or_path: str | None) -> float:
    """The peak learning rate a run gets when none is given (see :attr:`TrainConfig.lr`)."""
    return 1e-4 if model_name_or_path else 1e-3
