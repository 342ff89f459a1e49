"""What ``bench_step.py`` and ``bench_data.py`` share: FLOPs, GPU peaks, the environment, memory, tables.

FLOPs convention (:func:`flops_per_sequence`): the *useful* work of one training sequence,
the same count for the original step and this project's, so that MFU compares work done,
not work spent:

* training = forward + backward = 3 x forward; an ``m x k`` by ``k x n`` matmul is ``2mkn``;
* encoder ``6 * T * N``, ``N = L * (4 d^2 + 2 d d_ff)``: the weight matrices of the L layers
  (Q, K, V, attention output, the two FFN matrices). Embedding look-ups, biases,
  LayerNorm, softmax, GELU and dropout are not counted;
* attention ``12 * L * d * T^2``: ``QK^T`` and ``AV``, ``2 T^2 d`` each per layer forward,
  all T x T pairs (BERT attends both ways; padding is counted);
* MLM head on the P masked slots only ``6 * P * d * (d + V)`` (the d x d transform and the
  tied d x V decoder); the original step's decoder over the other T - P positions is
  wasted work and not counted;
* pooler + NSP classifier on [CLS] ``6 * d * (d + 2)`` (negligible).

MFU = counted FLOPs x sequences/s / the GPU's dense bf16 tensor peak, for fp32 rows too.

That count charges every sequence T positions, T^2 attention pairs and P prediction slots:
padding counts as work. :func:`batch_work` also counts each sequence over its real length
``t_i`` (attention-mask sum) and its real slots ``p_i`` (``masked_lm_ids != -100``), with the
same formula: ``6 N t_i + 12 L d t_i^2 + 6 p_i d (d + V) + 6 d (d + 2)``, summed over the
batch. Real-token MFU is that sum per second over the peak: the work a step that skipped
padding would have to do, so padded MFU / real-token MFU shows what padding costs.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from bert_tutorial.hdf5_format import default_max_predictions

#: Encoder shapes: BERT-base, BERT-small (Turc et al.), and the package's default CPU model.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
}
#: bert-base-uncased's WordPiece vocabulary.
BERT_VOCAB_SIZE = 30522
MIB = 1024 * 1024

#: Dense (no sparsity) tensor-core peak in TFLOP/s by a substring of the CUDA device name,
#: bf16 unless noted; the first match wins, so specific names come before the names they
#: contain ("H100 PCIe" before "H100", "L40S" before "L4", "A100" before "A10").
#: From NVIDIA's datasheets (the figures there are "with sparsity", twice these): H100 and
#: H200 (SXM 989, PCIe 756, NVL 835), A100 (312), L40S (362), L40 (181), L4 (121), A10 (125).
#: A10G is AWS's variant of the A10 and has no NVIDIA datasheet: the A10's figure is used.
#: T4 has no bf16: its figure is the fp16 tensor-core peak (65).
GPU_PEAKS: tuple[tuple[str, float, str], ...] = (
    ("H100 PCIe", 756.0, "bf16"),
    ("H100 NVL", 835.0, "bf16"),
    ("H200 NVL", 835.0, "bf16"),
    ("GH200", 989.0, "bf16"),
    ("H200", 989.0, "bf16"),
    ("H100", 989.0, "bf16"),  # SXM
    ("A100", 312.0, "bf16"),
    ("L40S", 362.0, "bf16"),
    ("L40", 181.0, "bf16"),
    ("L4", 121.0, "bf16"),
    ("A10", 125.0, "bf16"),  # A10 and A10G
    ("T4", 65.0, "fp16 (T4 has no bf16)"),
)

#: The issue's goal, 40 % MFU for BERT-base on an H100 SXM, for the data loader's verdict.
TARGET_MFU = 0.40
TARGET_PEAK_TFLOPS = 989.0


# --- FLOPs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDims:
    """The shapes the FLOPs count depends on."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    intermediate_size: int
    seq_len: int
    predictions: int

    @classmethod
    def for_size(cls, size: str, seq_len: int, vocab_size: int = BERT_VOCAB_SIZE,
                 predictions: int | None = None) -> ModelDims:
        """A :data:`MODEL_SIZES` model at ``seq_len``, P the format's default for that T."""
        shape = MODEL_SIZES[size]
        return cls(vocab_size=vocab_size, hidden_size=shape["hidden_size"],
                   num_layers=shape["num_hidden_layers"], intermediate_size=shape["intermediate_size"],
                   seq_len=seq_len,
                   predictions=default_max_predictions(seq_len) if predictions is None else predictions)


def encoder_matmul_params(dims: ModelDims) -> int:
    """N = L * (4 d^2 + 2 d d_ff), the encoder's weight-matrix entries (84,934,656 for BERT-base)."""
    d, ff = dims.hidden_size, dims.intermediate_size
    return dims.num_layers * (4 * d * d + 2 * d * ff)


def flops_per_sequence(dims: ModelDims) -> dict[str, float]:
    """Training FLOPs (forward + backward) of one sequence, by term; see the module docstring."""
    return _flops_terms(dims, float(dims.seq_len), float(dims.seq_len) ** 2,
                        float(dims.predictions), 1.0)


def _flops_terms(dims: ModelDims, tokens: float, squares: float, slots: float,
                 sequences: float) -> dict[str, float]:
    """The four terms from sums over sequences: of lengths, of squared lengths, of prediction
    slots, and the count (every term is linear in one of them, so a batch sums exactly)."""
    d, v = dims.hidden_size, dims.vocab_size
    terms = {
        "encoder": 6.0 * tokens * encoder_matmul_params(dims),
        "attention": 12.0 * dims.num_layers * d * squares,
        "mlm_head": 6.0 * slots * d * (d + v),
        "pooler_nsp": 6.0 * sequences * d * (d + 2),
    }
    terms["total"] = sum(terms.values())
    return terms


IGNORE_INDEX = -100  # what ``PretrainingDataset`` writes into unused ``masked_lm_ids`` slots


@dataclass
class BatchWork:
    """Padded and real work of the batches a benchmark step consumed, summed as they come.

    ``padded_flops`` charges every sequence T positions and the batch's P slots (the
    :func:`flops_per_sequence` count); ``real_flops`` the same formula over each sequence's
    own length and real slots. Counted on the host from the CPU batch, before the copy.
    """

    sequences: int = 0
    positions: int = 0  # sequences x T
    real_tokens: int = 0
    slots: int = 0  # sequences x P
    real_slots: int = 0
    padded_flops: float = 0.0
    real_flops: float = 0.0

    def add(self, dims: ModelDims, attention_mask: torch.Tensor, masked_lm_ids: torch.Tensor) -> None:
        """Count one batch (``[B, T]`` mask, ``[B, P]`` ids as the loader gives them)."""
        lengths = attention_mask.sum(dim=1).to(torch.float64)
        slots = (masked_lm_ids != IGNORE_INDEX).sum(dim=1).to(torch.float64)
        n, t = attention_mask.shape
        p = masked_lm_ids.shape[1]
        padded = replace(dims, seq_len=t, predictions=p)
        self.sequences += n
        self.positions += n * t
        self.real_tokens += int(lengths.sum())
        self.slots += n * p
        self.real_slots += int(slots.sum())
        self.padded_flops += n * flops_per_sequence(padded)["total"]
        self.real_flops += _flops_terms(dims, float(lengths.sum()), float((lengths**2).sum()),
                                        float(slots.sum()), float(n))["total"]

    def merge(self, other: BatchWork) -> None:
        """Add another count to this one."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def padding_share(self) -> float:
        """The fraction of the positions that are padding."""
        return 1.0 - self.real_tokens / self.positions if self.positions else math.nan


def batch_work(dims: ModelDims, attention_mask: torch.Tensor, masked_lm_ids: torch.Tensor) -> BatchWork:
    """The :class:`BatchWork` of one batch."""
    work = BatchWork()
    work.add(dims, attention_mask, masked_lm_ids)
    return work


def flops_lines(size: str, vocab_size: int, seq_lens: Sequence[int]) -> list[str]:
    """One line per T: GFLOP per sequence, by term."""
    lines = []
    for t in seq_lens:
        dims = ModelDims.for_size(size, t, vocab_size)
        f = {k: v / 1e9 for k, v in flops_per_sequence(dims).items()}
        lines.append(f"  T={t} P={dims.predictions}: {f['total']:.2f} GFLOP/sequence = encoder "
                     f"{f['encoder']:.2f} + attention {f['attention']:.2f} + MLM head "
                     f"{f['mlm_head']:.2f} + pooler/NSP {f['pooler_nsp']:.4f} "
                     f"(N = {encoder_matmul_params(dims):,} encoder matmul weights)")
    return lines


def peak_for_name(name: str) -> tuple[float, str] | None:
    """(dense tensor TFLOP/s, its precision) of a CUDA device called ``name``; None if unknown."""
    for key, tflops, dtype in GPU_PEAKS:
        if key in name:
            return tflops, dtype
    return None


def peak_tflops(device: torch.device, override: float | None = None) -> tuple[float | None, str]:
    """(peak TFLOP/s for MFU, where it comes from): ``override``, a known GPU, else (None, why)."""
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak for a CPU (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    found = peak_for_name(name)
    if found is None:
        return None, f"{name} is not in the peak table (pass --peak-tflops)"
    return found[0], f"{name}: dense {found[1]} tensor peak"


# --- environment ------------------------------------------------------------------------------


def _cpuinfo(key: str) -> str | None:
    """The first ``key: value`` of ``/proc/cpuinfo`` (Linux), else None."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU's marketing name (Linux), else what ``platform`` knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AVX-512 BF16 or AMX); without, bf16 is
    emulated and a BERT-base step takes minutes instead of seconds (measured: 34-43x slower)."""
    flags = set((_cpuinfo("flags") or "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def nvidia_smi() -> dict[str, str]:
    """Driver, clocks and power limit from ``nvidia-smi``; empty where it is missing or fails."""
    fields = ("name", "driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "power.limit")
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run([exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    first = out.strip().splitlines()[0] if out.strip() else ""
    values = [v.strip() for v in first.split(",")]
    return {f"nvidia-smi {k}": v for k, v in zip(fields, values, strict=False)}


def tf32_matmul() -> dict[str, Any]:
    """Whether fp32 matmuls may run in TF32 on CUDA (torch's default: no); fp32 rows depend on it."""
    allowed = bool(torch.backends.cuda.matmul.allow_tf32)
    precision = torch.get_float32_matmul_precision()
    return {"allow_tf32": allowed, "float32_matmul_precision": precision,
            "on": allowed or precision != "highest"}


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures depend on: date, hardware, software versions, machine load."""
    import h5py
    import numpy as np
    import transformers

    env: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "device": str(device),
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads, "
               f"{torch.backends.cpu.get_cpu_capability()}, bf16 {'native' if cpu_has_bf16() else 'emulated'})",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
    }
    if hasattr(os, "getloadavg"):  # other processes skew CPU figures; the load shows them
        env["load average (1/5/15 min) at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["tf32 matmul"] = tf32_matmul()
        env.update(nvidia_smi())
    return env


def print_environment(env: dict[str, Any]) -> None:
    print("== Environment ==")
    for key, value in env.items():
        print(f"  {key}: {value}")


def finish(report: dict[str, Any], json_path: Path | None) -> None:
    """Record the load at the end (contention during the run shows there), write the JSON."""
    if hasattr(os, "getloadavg"):
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        report["environment"]["load average (1/5/15 min) at end"] = load
        print(f"\nload average (1/5/15 min) at end: {load}")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {json_path}")


# --- memory -----------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc``; elsewhere the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def release_memory() -> None:
    """Free what can be freed (Python garbage, CUDA cache, glibc arenas) before measuring."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory of a block: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the
    peak RSS *increase* over the RSS at the start of the block (``VmHWM``, reset through
    ``/proc/self/clear_refs``; None where Linux does not allow that)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0
        self.supported = True

    def __enter__(self) -> PeakMemory:
        release_memory()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self.base = rss_bytes()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            self.supported = False
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def peak_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self.supported:
            with contextlib.suppress(OSError), open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return max(0, int(line.split()[1]) * 1024 - self.base)
        return None


# --- tables -----------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or "n/a" for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def table(rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, header first, columns padded to line up in a terminal."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
