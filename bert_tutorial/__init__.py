"""Companion package of the BERT pre-training tutorial (MLM + NSP on HDF5 shards).

The notebooks in ``notebooks/`` write each stage's core in plain cells, check it
against the tested code here, then let the package do the heavy lifting. Everything
a notebook needs is importable from the top level::

    from bert_tutorial import PretrainingDataset, TrainConfig, Trainer, train_step

Names are resolved on first use (PEP 562), so ``python -m bert_tutorial.create_data``
does not pay for importing torch's training stack, transformers' models or matplotlib.
The original tutorial's code, re-created for comparison, is :mod:`bert_tutorial.original`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["TrainConfig", "DATA_SAMPLES", "REPO_ROOT"], "config"),
    **dict.fromkeys(["find_shards", "PretrainingDataset", "ShardedSampler", "make_dataloader",
                     "build_mlm_labels", "sample_to_tensors", "move_batch", "IGNORE_INDEX"], "data"),
    **dict.fromkeys(["inspect_shard", "read_shard", "write_shard"], "hdf5_format"),
    **dict.fromkeys(["load_tokenizer", "read_vocab"], "tokenization"),
    **dict.fromkeys(["build_model", "load_pretrained", "PretrainingModel", "pretraining_loss",
                     "unwrap"], "model"),
    **dict.fromkeys(["build_optimizer", "build_scheduler", "parameter_groups", "warmup_steps",
                     "lr_schedule"], "optim"),
    **dict.fromkeys(["resolve_device", "resolve_precision", "autocast_context",
                     "make_grad_scaler"], "device"),
    **dict.fromkeys(["train_step", "StepResult", "step_token_counts"], "step"),
    **dict.fromkeys(["Trainer", "TrainResult"], "training"),
    **dict.fromkeys(["evaluate", "finalize_metrics"], "evaluation"),
    **dict.fromkeys(["read_metrics"], "metrics"),
    **dict.fromkeys(["References", "plot_training_curves", "plot_runs", "plot_lr_schedule"], "plotting"),
    **dict.fromkeys(["load_shard", "sample_at", "decode_sample", "masked_tokens_table",
                     "plot_batch"], "samples"),
    **dict.fromkeys(["masking_statistics", "plot_masking_statistics", "frequency_baseline"],
                    "masking_stats"),
    **dict.fromkeys(["fill_mask", "fill_mask_table", "plot_fill_mask", "plot_before_after"], "fill_mask"),
    **dict.fromkeys(["make_sample_shards"], "sample_data"),
    **dict.fromkeys(["gpu_report", "plan_launch", "launch_torchrun", "torchrun_command",
                     "config_args"], "multi_gpu"),
    **dict.fromkeys(["checkpoint", "original"], ""),  # modules themselves
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bert_tutorial' has no attribute '{name}'")
    module = _EXPORTS[name]
    value = importlib.import_module(f".{module or name}", __name__)
    if module:
        value = getattr(value, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
