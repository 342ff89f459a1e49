"""``python -m bert_tutorial.pretrain``: the whole job from the command line.

With no arguments it trains a small BERT from scratch on ``data_samples/`` on the
CPU in a few minutes, evaluating and checkpointing every epoch. Every
``TrainConfig`` field is a flag (``--batch-size 64``, ``--no-sparse-mlm-head``),
and ``torchrun --nproc_per_node=N -m bert_tutorial.pretrain ...`` runs it with DDP.
Running the same command again resumes from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from ..config import ConfigError, TrainConfig, full_micro_batch


def _field_type(hint: Any) -> type:
    """The concrete scalar type behind an annotation like ``int | None``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _none_or(kind: type):
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


class _BoolOrNone(argparse.BooleanOptionalAction):
    """``--flag`` / ``--no-flag`` for a ``bool | None`` field, and ``--flag none`` for None.

    Such a field's None means "decide by device" (``compile``, ``fused_adamw``); a
    non-None default (``compile=False``) needs a way to say None on the command line, or
    ``launch.config_args`` could not reproduce ``TrainConfig.full()`` for ``torchrun``.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.nargs = "?"  # the flag alone, or followed by "none"
        self.metavar = "none"

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if values is None:
            super().__call__(parser, namespace, values, option_string)
        elif str(values).lower() in ("none", "null") and not str(option_string).startswith("--no-"):
            setattr(namespace, self.dest, None)
        else:
            parser.error(f"argument {option_string}: takes no value, or \"none\" after "
                         f"--{self.dest.replace('_', '-')}; got {values!r}")


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: flags not given stay out of the namespace, so "--eval-data none" can
    # still mean None while an absent flag means "keep the TrainConfig default".
    parser = argparse.ArgumentParser(
        prog="python -m bert_tutorial.pretrain",
        description=__doc__.split("\n\n")[1].replace("``", ""),
        argument_default=argparse.SUPPRESS,
    )
    full, default = TrainConfig.full(), TrainConfig()
    changed = ", ".join(f"{f.name} {getattr(full, f.name)}" for f in dataclasses.fields(TrainConfig)
                        if getattr(full, f.name) != getattr(default, f.name)
                        and f.name not in ("batch_size", "grad_accum_steps"))
    short, long = (" x ".join(map(str, full_micro_batch(t))) for t in (128, 512))
    parser.add_argument("--full", action="store_true", default=False,
                        help=f"start from TrainConfig.full() instead of the defaults below: {changed}; "
                             "a global batch of 256 as batch_size x grad_accum_steps, "
                             f"{short} at T <= 128, {long} "
                             "at longer T (read from the --train-data shards). compile None = "
                             "compiled on CUDA only, so --full --device cpu runs uncompiled. "
                             "A GPU run: pass --train-data/--eval-data for real shards")
    parser.add_argument("--dry-run", action="store_true", default=False,
                        help="build the run (data, model, optimizer, output folder) and stop before training")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag, hint = "--" + f.name.replace("_", "-"), hints[f.name]
        text = f"{f.metadata.get('help', '')} (default {f.default})".lstrip()
        if typing.get_origin(hint) is typing.Literal:  # a fixed set of names; never None
            parser.add_argument(flag, help=text, choices=typing.get_args(hint))
        elif _field_type(hint) is bool:
            none_ok = _field_type(hint) is not hint  # bool | None
            parser.add_argument(flag, action=_BoolOrNone if none_ok else argparse.BooleanOptionalAction,
                                help=text)
        elif f.name == "adam_betas":
            parser.add_argument(flag, type=float, nargs=2, help=text)
        else:
            parser.add_argument(flag, type=_none_or(_field_type(hint)), help=text)
    return parser


def parse_command_line(argv: Sequence[str] | None = None) -> tuple[TrainConfig, bool]:
    """The ``TrainConfig`` a command line describes (not yet validated) and its ``--dry-run``.

    Both come from one parse: argparse accepts any unambiguous prefix of a flag, so
    ``--dry`` is ``--dry-run`` and must not be looked up as a literal string.
    """
    overrides = vars(build_parser().parse_args(argv))
    dry_run = overrides.pop("dry_run")
    full = overrides.pop("full")
    if not full:
        return TrainConfig(**overrides), dry_run
    train_data = overrides.get("train_data", TrainConfig.train_data)
    return TrainConfig.full(shard_seq_length(train_data), **overrides), dry_run


def shard_seq_length(train_data: str) -> int | None:
    """T of the first training shard (its header only), for ``--full``'s micro-batch.

    None when the shards cannot be read yet: the Trainer then reports what is wrong with
    them, and ``full`` takes the split that fits any T.
    """
    from ..core.data import find_shards
    from ..hdf5_format import inspect_shard

    try:
        return inspect_shard(find_shards(train_data)[0]).max_seq_length
    except (ValueError, OSError):  # ShardError is a ValueError
        return None


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """The ``TrainConfig`` a command line describes (not yet validated: see ``main``)."""
    return parse_command_line(argv)[0]


#: How torch re-raises an error from a DataLoader worker in the main process.
WORKER_ERROR = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message says all there is to say: printed without a traceback."""
    from ..hdf5_format import ShardError
    from ..safe_io import DiskFullError
    from .checkpoint import CheckpointError
    from .metrics import MetricsError
    from .run_dir import RunDirError
    from .trainer import NonFiniteLossError

    return (ConfigError, RunDirError, CheckpointError, DiskFullError, ShardError, NonFiniteLossError,
            MetricsError)


def error_message(exc: BaseException) -> str:
    """The message of an expected error, also when a DataLoader worker raised it.

    A worker's error reaches the main process re-raised with "Caught ShardError in
    DataLoader worker process 0. Original Traceback ..." and the worker's traceback as
    its message; what the error itself said follows its qualified name at the end.
    """
    text = str(exc)
    if not WORKER_ERROR.match(text):
        return text
    name = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return text.rpartition(name)[2].rstrip() if name in text else text


def main(argv: Sequence[str] | None = None, do_train: bool = True) -> int:
    """Train; exit 0 when done or stopped on request, 2 for a bad value, 1 for other errors.

    ``do_train=False`` (``--dry-run``) builds everything and stops before the first step:
    a cheap check of data, model size, step counts and output folder before a long job.

    A second SIGTERM/SIGINT stops at once with 128 + the signal number, as a shell
    reports a process killed by that signal.
    """
    from .distributed import cleanup_distributed
    from .signals import StopNow

    cfg, dry_run = parse_command_line(argv)
    try:
        cfg.validate()  # before torch, the data or the output folder are touched
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        _train(cfg, do_train and not dry_run)
    except StopNow as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 128 + exc.signum
    except _expected_errors() as exc:
        print(f"error: {error_message(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    finally:
        cleanup_distributed()
    return 0


def _train(cfg: TrainConfig, do_train: bool) -> None:
    from .signals import stop_before_training
    from .trainer import Trainer

    with stop_before_training():  # loading data and models can take minutes
        trainer = Trainer(cfg)
    if trainer.dist.is_main:
        print(f"device {trainer.device}, precision {trainer.precision}, world size "
              f"{trainer.dist.world_size}{' (DDP)' if trainer.dist.enabled else ''}, {len(trainer.train_data)} train sequences, "
              f"{trainer.total_steps} optimizer steps -> {trainer.output_dir}")
    if not do_train:
        return
    result = trainer.fit()
    if trainer.dist.is_main:
        if result.stopped_early and result.steps == 0:
            print("Stopped on request before the first step (nothing to save); run the same "
                  "command to start it again.")
        elif result.stopped_early:
            print(f"Stopped on request at step {result.steps}; run the same command to resume.")
        elif result.final_eval is not None:
            print("Final eval:", json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                             for k, v in result.final_eval.items()}))

