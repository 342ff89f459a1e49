"""Companion package of the BERT pre-training tutorial (MLM + NSP on HDF5 shards).

The notebooks write each stage's code in plain cells, check it against the tested code
here, then use it. What they import is this module's public API, and nothing more::

    from bert_tutorial import PretrainingDataset, TrainConfig, Trainer, train_step

The package, by layer (each folder's docstring says its job and what it may import;
``tests/test_architecture.py`` checks the rules):

* contracts, importing nothing else of the package: :mod:`.config` (``TrainConfig``),
  :mod:`.hdf5_format` (the shard format), :mod:`.tokenization` (the vocabulary),
  :mod:`.safe_io` (atomic writes, the named disk-full error), :mod:`.warn` (warnings that
  name the user's line);
* :mod:`.core` - the method: dataset and loader, model and loss, the step, evaluation,
  optimizer and schedule;
* :mod:`.create_data` - text -> shards (``python -m bert_tutorial.create_data``);
* :mod:`.pretrain` - the run machinery: Trainer, run folder, checkpoints, signals, DDP
  and launching, curves, the CLI (``python -m bert_tutorial.pretrain``);
* :mod:`.teach` - what the notebooks use to show things, the original tutorial re-created.

Names are resolved on first use (PEP 562), so ``import bert_tutorial`` stays cheap:
``python -m bert_tutorial.create_data`` does not pay for torch, transformers or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public modules, exported as themselves: name -> module.
_MODULES = {"checkpoint": "pretrain.checkpoint", "original": "teach.original"}
#: Public name -> the module that defines it (the modules above included).
_EXPORTS: dict[str, str] = {
    **_MODULES,
    "TrainConfig": "config",
    **dict.fromkeys(["inspect_shard"], "hdf5_format"),
    **dict.fromkeys(["VocabInfo", "load_tokenizer", "read_vocab"], "tokenization"),
    **dict.fromkeys(["IGNORE_INDEX", "PretrainingDataset", "ShardedSampler", "find_shards",
                     "make_dataloader"], "core.data"),
    **dict.fromkeys(["PretrainingModel", "build_model", "load_pretrained", "unwrap"], "core.model"),
    **dict.fromkeys(["build_optimizer", "build_scheduler", "lr_schedule", "parameter_groups",
                     "warmup_steps"], "core.optim"),
    **dict.fromkeys(["DynamicMasking", "DynamicMaskingDataset", "read_generator", "unmasked_tokens"],
                    "core.dynamic_masking"),
    "train_step": "core.step",
    **dict.fromkeys(["evaluate", "frequency_baseline"], "core.evaluation"),
    "Trainer": "pretrain.trainer",
    "resolve_device": "pretrain.device",
    "read_metrics": "pretrain.metrics",
    **dict.fromkeys(["References", "plot_lr_schedule", "plot_runs", "plot_training_curves"],
                    "pretrain.curves"),
    **dict.fromkeys(["config_args", "gpu_report", "launch_torchrun", "plan_launch",
                     "torchrun_command"], "pretrain.launch"),
    **dict.fromkeys(["decode_sample", "load_shard", "masked_tokens_table", "plot_batch",
                     "sample_at"], "teach.decode"),
    **dict.fromkeys(["masking_statistics", "plot_masking_statistics"], "teach.masking_stats"),
    **dict.fromkeys(["fill_mask", "plot_before_after", "plot_fill_mask"],
                    "teach.fill_mask"),
    **dict.fromkeys(["masked_words", "testament_task"], "teach.verses"),
    **dict.fromkeys(["linear_probe", "verse_features"], "teach.probe"),
    "make_sample_shards": "teach.book_shards",
    **dict.fromkeys(["mix_shards", "plot_domain_curves"], "teach.domains"),
    "plot_epoch_runs": "teach.epoch_runs",
    "enter_repository": "teach.notebook_setup",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bert_tutorial' has no attribute '{name}'")
    module = _EXPORTS[name]
    value = importlib.import_module(f".{module}", __name__)
    if name not in _MODULES:  # fill_mask is a function of the module teach.fill_mask
        value = getattr(value, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
