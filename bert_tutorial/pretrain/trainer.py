"""The training loop: MLM + NSP (or MLM only), gradient accumulation, mixed precision, resume.

``Trainer(cfg).fit()`` is the whole job. It runs unchanged in a notebook, as
``python -m bert_tutorial.pretrain`` and under ``torchrun`` (DDP): only rank 0
writes checkpoints, metrics and plots.

A run is resumable at every checkpoint: weights, optimizer, scheduler, grad
scaler, RNG and the position in the data are restored, so on CPU a resumed run
reproduces the uninterrupted run's losses bit for bit. The run folder's rules (one
run per folder, verified checkpoints, recorded data) live in :mod:`bert_tutorial.pretrain.run_dir`;
every fault it survives is listed in ``docs/faults.md``.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..config import ConfigError, TrainConfig
from ..core.data import PretrainingDataset, ShardedSampler, find_shards, make_dataloader
from ..core.dynamic_masking import dynamic_masking_of
from ..core.evaluation import evaluate
from ..core.model import (
    build_model,
    check_vocab,
    load_pretrained,
    unwrap,
)
from ..core.optim import build_optimizer, build_scheduler, uses_fused_adamw, warmup_steps
from ..core.step import StepResult, train_step
from ..tokenization import read_vocab
from ..warn import warn_caller
from . import checkpoint as ckpt
from .device import (
    autocast_context,
    load_scaler_state,
    make_grad_scaler,
    resolve_device,
    resolve_precision,
)
from .distributed import (
    DistInfo,
    any_rank,
    barrier,
    decided_by_rank0,
    gather_objects,
    init_distributed,
)
from .fast_encoder import PackingCollate
from .loss_window import LossWindow
from .metrics import METRICS_FILE, MetricsError, append_record, has_eval_at, truncate_after
from .run_dir import (
    CONFIG_FILE,
    DATA_FILE,
    RESUMABLE_CHANGES,
    RunDir,
    data_record,
    data_text,
    inputs_record,
)
from .signals import ignore_stop_signals, stop_signals
from .speed import compiled, compiles, fused_clip_and_step, speed_module

__all__ = ["CONFIG_FILE", "RESUMABLE_CHANGES", "NonFiniteLossError", "Trainer", "TrainResult"]


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint. ``epoch_samples`` counts all ranks."""

    step: int = 0
    epoch: int = 0
    epoch_samples: int = 0
    bad_steps: int = 0


@dataclass
class TrainResult:
    final_eval: dict[str, Any] | None
    eval_history: list[dict[str, Any]]
    steps: int
    stopped_early: bool
    output_dir: Path


class NonFiniteLossError(FloatingPointError):
    """Raised after ``max_bad_steps`` consecutive optimizer steps with NaN/inf gradients."""


class Trainer:
    """Builds data, model, optimizer and schedule from a ``TrainConfig`` and trains."""

    def __init__(self, cfg: TrainConfig) -> None:
        cfg.validate()  # before anything is built or written: a bad value leaves no trace
        self.cfg = cfg
        probe = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(probe.type)
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.precision = resolve_precision(cfg.precision, self.device)
        if cfg.fold_clipping and not uses_fused_adamw(cfg, self.device):  # before any write
            raise ConfigError("--fold-clipping (fold_clipping) clips inside the fused AdamW kernel, "
                              f"which this run does not use on {self.device.type}: add --fused-adamw "
                              "(it is the default on CUDA only)")
        self.autocast = autocast_context(self.device, self.precision)
        self.output_dir = Path(cfg.output_dir)
        self.vocab_size = len(read_vocab(cfg.vocab_file))
        self._open_data()
        data = {**data_record({"train": self.train_data, "eval": self.eval_data}),
                # only rank 0 checks and writes the record: the others skip the hashing
                "inputs": inputs_record(cfg.vocab_file, cfg.model_name_or_path) if self.dist.is_main else {}}
        self.data_json = data_text(data)  # also kept in every checkpoint
        self.run_dir = RunDir(self.output_dir, is_main=self.dist.is_main)
        # The first step a checkpoint is saved at: a log beyond it proves checkpoints existed.
        first_save = min(s for s in (cfg.save_every_steps, self.steps_per_epoch, self.total_steps) if s)
        resume_from = self.run_dir.open(cfg, data, first_save)  # locks the folder (rank 0)
        #: A resumed run's metadata and log are rewritten when it trains (``fit``), so a dry run
        #: that only builds it (e.g. ``--dry-run --allow-data-change``) leaves the folder as it was.
        self._data = data if resume_from is not None else None
        try:
            self._build(resume_from)
            if resume_from is None:
                self.run_dir.commit(cfg, data, fresh=True)
        except BaseException:
            self.run_dir.lock.release()
            raise

    # --- setup -----------------------------------------------------------------------------

    def _open_data(self) -> None:
        """Datasets, loaders and the step count; shards are checked against the model size."""
        cfg = self.cfg
        self.train_data = PretrainingDataset(find_shards(cfg.train_data), vocab_size=self.vocab_size)
        if cfg.masking == "dynamic":  # new masks at every read; evaluation keeps the stored ones
            self.train_data = dynamic_masking_of(self.train_data, cfg)
        self.eval_data = (
            PretrainingDataset(find_shards(cfg.eval_data), vocab_size=self.vocab_size)
            if cfg.eval_data else None
        )
        if self.eval_data is not None:
            self._warn_shared_shards()
        if not cfg.model_name_or_path:
            self._check_positions(cfg.max_position_embeddings, "or raise --max-position-embeddings")
        self.train_loader = self._loader(self.train_data, train=True)
        self.eval_loader = self._loader(self.eval_data, train=False) if self.eval_data else None
        self.samples_per_step = cfg.batch_size * cfg.grad_accum_steps * self.dist.world_size
        self.steps_per_epoch = len(self.train_data) // self.samples_per_step
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"{cfg.train_data}: {len(self.train_data)} samples are fewer than one optimizer step "
                f"({self.samples_per_step} = --batch-size {cfg.batch_size} x --grad-accum-steps "
                f"{cfg.grad_accum_steps} x world size {self.dist.world_size})"
            )
        self.total_steps = self.steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)

    def _warn_shared_shards(self) -> None:
        """Warn when eval shards are training shards (the same file, by device and inode)."""
        assert self.eval_data is not None
        train = {(st.st_dev, st.st_ino) for st in (p.stat() for p in self.train_data.paths)}
        shared = [p for p in self.eval_data.paths if (p.stat().st_dev, p.stat().st_ino) in train]
        if shared:
            names = ", ".join(p.name for p in shared[:3]) + (" ..." if len(shared) > 3 else "")
            warn_caller(f"{len(shared)} of the {len(self.eval_data.paths)} eval shard(s) are "
                        f"training shards ({names}): the evaluation measures how well the model "
                        "remembers its training text, not how it does on text it has not seen; "
                        "give --eval-data held-out shards")

    def _check_positions(self, limit: int, remedy: str) -> None:
        """Refuse shards longer than the model's position table (a tensor-size error mid-step)."""
        for data in (self.train_data, self.eval_data):
            if data is not None and data.max_seq_length > limit:
                raise ConfigError(
                    f"{data.paths[0]}: sequences of length {data.max_seq_length} do not fit the "
                    f"model's max_position_embeddings {limit} (--max-position-embeddings); use "
                    f"shards made with --max-seq-length <= {limit} {remedy}"
                )

    def _build(self, resume_from: Path | None) -> None:
        """Model, optimizer and schedule; restored from ``resume_from`` when given."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        if resume_from is not None:
            bert = load_pretrained(str(resume_from), cfg.attn_implementation)
            check_vocab(bert, self.vocab_size, source=str(resume_from))
            # Its config holds the run's attention dropout (--attention-dropout must match to resume).
        else:
            bert = build_model(cfg, self.vocab_size)
        self._check_positions(bert.config.max_position_embeddings, "or use a larger model")
        if self.dist.rank:  # each rank its own dropout masks (rank 0 continues the stream)
            torch.manual_seed(cfg.seed + self.dist.rank)
        self.module = speed_module(bert, cfg, self.device, self.precision)
        self.module.to(self.device)
        self.model: nn.Module = self.module
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.module, device_ids=ids)
        #: Whether the model runs compiled: ``compile=None`` compiles on CUDA only.
        self.compiled = compiles(cfg, self.device)
        # CUDA graphs (a compile mode other than "default") mark each micro-batch: see compiled().
        self.model, self._before_forward = compiled(self.model, cfg, self.device)
        self.optimizer = build_optimizer(self.module, cfg, self.device)
        self.scheduler = build_scheduler(
            self.optimizer, self.total_steps, warmup_steps(self.total_steps, cfg.warmup_fraction)
        )
        self.scaler = make_grad_scaler(self.device, self.precision)
        self.progress = Progress()
        self.metrics_file = self.output_dir / METRICS_FILE
        self._stop_requested = False
        #: Steps whose skip verdict is still on the device (fused optimizers), oldest first.
        self._unchecked: list[tuple[int, StepResult]] = []
        #: Every evaluation of this process's ``fit`` (a resumed run starts a new list).
        self.eval_history: list[dict[str, Any]] = []
        #: A run stopped in an epoch's (or the run's) last step was saved before evaluating it.
        self._eval_pending = False
        if resume_from is not None:
            self._load_state(resume_from)

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                        parameters: list[torch.Tensor], max_grad_norm: float,
                        ) -> tuple[torch.Tensor, bool | torch.Tensor, float | None]:
        """``train_step``'s clip-and-step: on the device for a fused AdamW (see speed.py)."""
        return fused_clip_and_step(optimizer, scaler, parameters, max_grad_norm,
                                   fold_clipping=self.cfg.fold_clipping)

    def _load_state(self, checkpoint: Path) -> None:
        state = ckpt.load_training_state(checkpoint)
        ckpt.check_global_batch(checkpoint, state, self.cfg.batch_size, self.cfg.grad_accum_steps,
                                self.dist.world_size)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        load_scaler_state(self.scaler, state["scaler"])
        self.progress = p = Progress(**state["progress"])
        if p.step > self.total_steps:  # fewer steps now (--allow-data-change with less data)
            raise ConfigError(
                f"{checkpoint}: the run is at step {p.step}, past the {self.total_steps} steps the "
                f"current data give; resume with the data it started on, or train on these data "
                "in another --output-dir")
        self._close_epoch()  # saved at an epoch's end before it closed, or the data shrank
        rngs = state["rng_per_rank"]
        if self.dist.rank < len(rngs):
            ckpt.set_rng_state(rngs[self.dist.rank], self.device)
        # else: a rank the checkpoint did not have keeps its seed + rank stream
        if self.dist.is_main:
            print(f"Resumed from {checkpoint} at step {p.step}")
        # rank 0 reads the log; every rank must hear the verdict (or the error)
        self._eval_pending = decided_by_rank0(self._evaluation_missing, self.dist.is_main, MetricsError)

    def _evaluation_missing(self) -> bool:
        """Whether the checkpoint closes an epoch (or the run) whose evaluation was not logged.

        A stop in an epoch's last step saves before ``fit`` evaluates the epoch; the
        resumed run evaluates it first, so its log equals an uninterrupted run's.
        """
        p = self.progress
        epoch_end = p.step == self.total_steps or p.epoch_samples == 0  # closed by _load_state
        if self.eval_data is None or p.step == 0 or not epoch_end:
            return False
        return not has_eval_at(self.metrics_file, p.step)

    # --- the loop --------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train to ``total_steps``; evaluate and save at each epoch end (and as configured).

        The output folder stays locked while training and is released when ``fit``
        returns or raises. SIGTERM or SIGINT finishes the step, saves and returns
        (``stopped_early``); a second one stops at once (``signals.StopNow``).
        """
        final_eval = None
        with self.run_dir.training():
            if self._data is not None:  # resumed: drop what the lost steps logged, record the run
                if self.dist.is_main:
                    truncate_after(self.metrics_file, self.progress.step)
                self.run_dir.commit(self.cfg, self._data, fresh=False)
            self.model.train()  # from_pretrained() returns a model in eval mode: dropout off
            # The handlers cover the step-0 evaluation too: a SIGTERM there ended the process
            # (exit 143) without a word.
            with stop_signals(self._request_stop):
                if self.progress.step == 0 and self.eval_data is not None:
                    if self.dist.is_main:  # the plots' reference lines: what a model without knowledge scores
                        from .curves import References  # matplotlib only when it is needed

                        refs = References.measure(self.train_data.paths, self.eval_data.paths,
                                                  self.vocab_size)
                        append_record(self.metrics_file, refs.to_record())
                    self._evaluate_and_log()  # the untrained model: where the curves start
                    # Nothing to save before the first step: the same command starts over.
                    if any_rank(self._stop_requested, self.device):
                        self._stop_requested = True
                        return TrainResult(None, list(self.eval_history), 0, True, self.output_dir)
                bar = tqdm(
                    total=self.total_steps, initial=self.progress.step, desc="train",
                    dynamic_ncols=True,
                    # Rank 0's bar follows tqdm's own settings (TQDM_DISABLE=1 turns it off).
                    **({} if self.dist.is_main else {"disable": True}),
                )
                with bar:
                    if self._eval_pending:  # stopped after an epoch's last step: evaluate it first
                        final_eval = self._evaluate_and_log()
                    while self.progress.step < self.total_steps:
                        self._train_epoch(bar)
                        if self._agree_to_stop():
                            break
                        final_eval = self._evaluate_and_log()
                        self._refuse_to_end_diverged()
                        self.save()
                        if self.progress.step < self.total_steps and self._agree_to_stop():
                            break
        return TrainResult(final_eval, list(self.eval_history), self.progress.step,
                           self._stop_requested, self.output_dir)

    def _refuse_to_end_diverged(self) -> None:
        """At the run's end: raise if its last steps were non-finite (a streak shorter than
        ``max_bad_steps`` when the steps ran out), instead of finishing with NaN losses."""
        p = self.progress
        if p.step >= self.total_steps and p.bad_steps:
            first = p.step - p.bad_steps + 1
            steps = f"step {p.step}" if first == p.step else f"steps {first}-{p.step}"
            raise NonFiniteLossError(
                f"the run ended in a streak of {p.bad_steps} non-finite step(s) ({steps}), "
                f"fewer than --max-bad-steps {self.cfg.max_bad_steps}: lower the learning rate "
                f"or use bf16/fp32; {self._usable_checkpoint()}")

    def _request_stop(self, signum: int) -> None:
        """The first SIGTERM/SIGINT: stop after this step (the ranks agree on it, see below)."""
        self._stop_requested = True
        if self.dist.is_main:
            every = self.cfg.log_every_steps
            until = (f"finishing step {self.progress.step + 1}" if not self.dist.enabled or every == 1
                     else f"training on to the next log step (every {every}: the ranks agree there)")
            then = "saving a checkpoint, then stopping"
            if self.progress.step == 0 and not self._eval_pending and self.eval_data is not None \
                    and not self.eval_history:
                until, then = "finishing the evaluation of the starting model", "then stopping"
            tqdm.write(f"{signal.Signals(signum).name}: {until}, {then} (send it again to stop "
                       "at once)", file=sys.stderr)

    def _agree_to_stop(self) -> bool:
        """Stop on every rank if SIGTERM reached any rank (a collective: call it on all ranks).

        A signal can land on one rank after the last in-step check; acting on the local
        flag alone would send that rank home while the others enter evaluation's
        all-reduce and wait for it forever (NCCL) or crash (gloo). The reduced flag decides,
        and it never overwrites this rank's own: a signal whose handler runs while the
        all-reduce waits for the other ranks is kept for the next agreement, not erased.
        """
        if not any_rank(self._stop_requested, self.device):
            return False
        self._stop_requested = True
        self.save()  # a no-op when this step is saved already
        return True

    def _loader(self, data: PretrainingDataset, train: bool) -> torch.utils.data.DataLoader:
        """This rank's loader, built once: its sampler is moved to each epoch and position.

        Training shares must be equal (every step is a collective); evaluation ends with a
        single all-reduce, so its shares may differ by one and cover every sequence.
        """
        sampler = ShardedSampler(data, shuffle=train, seed=self.cfg.seed, rank=self.dist.rank,
                                 world_size=self.dist.world_size, even=train)
        return make_dataloader(data, self.cfg.batch_size, sampler=sampler, num_workers=self.cfg.num_workers,
                               pin_memory=self.device.type == "cuda", drop_last=train,
                               worker_init_fn=ignore_stop_signals,
                               # --unpad: the packing indices are computed in the loader's workers
                               collate_fn=PackingCollate() if self.cfg.unpad else None)

    def _train_epoch(self, bar: tqdm) -> None:
        p, cfg = self.progress, self.cfg
        self.train_loader.sampler.set_epoch(p.epoch)
        self.train_loader.sampler.set_start(p.epoch_samples // self.dist.world_size)
        batches = iter(self.train_loader)
        window = LossWindow(self.device, nsp=self.module.nsp)
        steps_left = min(self.steps_per_epoch - p.epoch_samples // self.samples_per_step,
                         self.total_steps - p.step)
        clip = math.inf if cfg.max_grad_norm is None else cfg.max_grad_norm  # inf: no clipping
        for _ in range(steps_left):
            micro = [next(batches) for _ in range(cfg.grad_accum_steps)]
            result = train_step(
                self.model, micro, self.optimizer, self.scheduler, device=self.device,
                autocast=self.autocast, scaler=self.scaler, max_grad_norm=clip,
                optimizer_step=self._optimizer_step, before_forward=self._before_forward,
                keep_grad_buffers=self._before_forward is not None,
            )
            self._unchecked.append((p.step + 1, result))
            if not isinstance(result.updated, torch.Tensor):  # the verdict is on the host already
                self._check_updates()
            window.add(result.losses, result.lr)
            p.step += 1
            p.epoch_samples += self.samples_per_step
            bar.update(1)
            if p.step % cfg.log_every_steps == 0 or p.step == self.total_steps:
                self._log_window(window, bar)
            # An epoch's last step, and the run's, are evaluated and saved by fit() instead.
            epoch_done = self._epoch_used_up() or p.step == self.total_steps
            if cfg.eval_every_steps and p.step % cfg.eval_every_steps == 0 and not epoch_done:
                with window.paused():  # evaluation time is not training throughput
                    self._evaluate_and_log()
            if cfg.save_every_steps and p.step % cfg.save_every_steps == 0 and not epoch_done:
                self.save()
            # Under DDP agreeing on a stop is a collective; do it where logging syncs anyway.
            # Until then a rank that got the signal trains on: saving alone would enter the
            # checkpoint's collectives while the others enter the next step's all-reduce.
            if (not self.dist.enabled or p.step % cfg.log_every_steps == 0) and self._agree_to_stop():
                return
        self._close_epoch()
        if window.steps:
            self._log_window(window, bar)

    def _epoch_used_up(self) -> bool:
        return self.progress.epoch_samples // self.samples_per_step >= self.steps_per_epoch

    def _close_epoch(self) -> None:
        """Move on to the next epoch once this one's samples are all used."""
        if self._epoch_used_up():
            self.progress.epoch += 1
            self.progress.epoch_samples = 0

    def _check_updates(self) -> None:
        """Count consecutive skipped (NaN/inf) updates; give up after ``max_bad_steps``.

        A fused optimizer's verdicts stay on the device until the next log line, which
        syncs anyway. Under fp16 an overflow is routine while GradScaler searches for its
        scale, so it only counts once the scale is below 1, where scaling cannot explain it.
        """
        p = self.progress
        for step, result in self._unchecked:
            if result.updated:
                p.bad_steps = 0
                continue
            scale = result.loss_scale
            if scale is None and self.scaler.is_enabled():
                scale = self.scaler.get_scale()
            if scale is not None and scale >= 1.0:
                continue
            p.bad_steps += 1
            epoch, index = divmod(step - 1, self.steps_per_epoch)
            first = index * self.samples_per_step
            where = (f"step {step} (epoch {epoch}, samples {first}-{first + self.samples_per_step} "
                     "of the epoch)")
            if p.bad_steps >= self.cfg.max_bad_steps:
                raise NonFiniteLossError(
                    f"{p.bad_steps} consecutive non-finite gradients, last at {where}: "
                    f"lower the learning rate or use bf16/fp32; {self._usable_checkpoint()}"
                )
            warn_caller(f"non-finite gradient norm {result.grad_norm.item()} at {where}; "
                        "update skipped")
        self._unchecked.clear()

    def _log_window(self, window: LossWindow, bar: tqdm) -> None:
        self._check_updates()
        record = window.flush(self.progress.step, self.progress.epoch, self.samples_per_step)
        if self.dist.is_main:
            append_record(self.metrics_file, record)
            nsp = {"nsp": f"{record['nsp_loss']:.3f}"} if "nsp_loss" in record else {}
            bar.set_postfix(mlm=f"{record['mlm_loss']:.3f}", **nsp, lr=f"{record['lr']:.2e}")

    def _evaluate_and_log(self) -> dict[str, Any] | None:
        if self.eval_data is None:
            return None
        result = self.evaluate()
        record = {"kind": "eval", "step": self.progress.step, "epoch": self.progress.epoch, **result}
        self.eval_history.append(record)
        if self.dist.is_main:
            append_record(self.metrics_file, record)
            nsp = f" nsp_acc {result['nsp_accuracy']:.4f}" if "nsp_accuracy" in result else ""
            tqdm.write(f"eval @ step {record['step']}: mlm_loss {result['mlm_loss']:.4f} "
                       f"mlm_acc {result['mlm_accuracy']:.4f}{nsp}")
            if self.cfg.plots:
                from .curves import save_training_plots  # matplotlib only when plotting

                save_training_plots(self.output_dir)
        if not all(math.isfinite(result[k]) for k in ("mlm_loss", "loss")):  # every rank alike
            nsp = f", NSP loss {result['nsp_loss']}" if "nsp_loss" in result else ""
            what = f"MLM loss {result['mlm_loss']}{nsp} (logged in {self.metrics_file})"
            if self.progress.step == 0:
                raise NonFiniteLossError(f"evaluation of the starting model: {what}; are its weights "
                                         "finite (NaN or inf in the model it was loaded from)?")
            raise NonFiniteLossError(
                f"evaluation at step {self.progress.step}: {what}: the model has diverged; lower "
                f"the learning rate or use bf16/fp32; {self._usable_checkpoint()}")
        return record

    def evaluate(self) -> dict[str, float]:
        """Evaluate on the eval shards (this rank's part; sums are reduced across ranks)."""
        if self.eval_loader is None:
            raise ValueError("no eval_data configured")
        return evaluate(self.module, self.eval_loader, self.device, self.autocast, self.cfg.eval_max_batches)

    # --- checkpoints and signals -------------------------------------------------------------

    def _usable_checkpoint(self) -> str:
        """Which checkpoint a diverged run can still be used from, for its error message."""
        found = ckpt.newest_healthy_checkpoint(self.output_dir)
        if found is None:
            return "no checkpoint was saved before the non-finite steps"
        return (f"the newest checkpoint from before the non-finite steps is {found} (e.g. "
                "--model-name-or-path for a new run in another --output-dir)")

    def _weights_finite(self) -> bool:
        """Whether every weight is finite (one device sync; the ranks' weights are equal)."""
        params = [p.detach() for p in self.module.parameters()]
        return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())

    def save(self) -> Path | None:
        """Checkpoint the current step (rank 0 writes; every rank waits for it).

        Weights that are no longer finite are never saved: every rank raises
        :class:`NonFiniteLossError` (the weights are the same on every rank).
        """
        if not self._weights_finite():
            raise NonFiniteLossError(
                f"step {self.progress.step}: the weights are no longer finite (NaN or inf), so no "
                f"checkpoint was saved; lower the learning rate (or raise --adam-eps); "
                f"{self._usable_checkpoint()}")
        path = None
        rngs = gather_objects(ckpt.rng_state(self.device))  # a collective: every rank's stream
        if self.dist.is_main:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "progress": vars(self.progress).copy(),
                "rng_per_rank": rngs,
                "world_size": self.dist.world_size,
                "samples_per_step": self.samples_per_step,
            }
            config = json.dumps(self.cfg.to_dict(), indent=2, sort_keys=True) + "\n"
            path = ckpt.save_checkpoint(
                self.output_dir, unwrap(self.model), state, self.progress.step,
                keep_last=self.cfg.keep_last_checkpoints,
                extra_files={CONFIG_FILE: config, DATA_FILE: self.data_json},
                bad_steps=self.progress.bad_steps,
            )
        barrier()
        return path
