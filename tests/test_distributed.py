"""DDP under torchrun on the CPU (gloo), checked against one process with the same global batch.

Two real jobs are launched (each a few seconds of start-up on a 2-core machine):

* ``two_proc``: ``torchrun --standalone --nproc_per_node=2 -m bert_tutorial.pretrain
  --device cpu``, per-rank batch B=8, no accumulation;
* ``two_nodes``: two torchrun agents of one process each that meet at a c10d rendezvous
  (the multi-node set-up, on one machine) and run this file as a worker: per-rank batch
  4 with ``grad_accum_steps=2``; rank 1 alone gets SIGTERM in step 3, the job saves and
  stops, and a new Trainer resumes it in the same processes. The
  worker records which samples each rank read, counts ``no_sync`` entries and exercises
  the collectives of ``bert_tutorial.pretrain.distributed``.

Both have the global batch 16 of the one-process reference (batch 16, run in this
process). The Trainer normalises the loss by the whole step's masked tokens and the
strided sampler gives the ranks' k-th batches the one-process k-th batch between
them, so with dropout off all three follow the same trajectory up to float rounding.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tiny import free_port

from bert_tutorial.config import TrainConfig
from bert_tutorial.core.data import PretrainingDataset, ShardedSampler, find_shards, make_dataloader
from bert_tutorial.pretrain import checkpoint as ckpt
from bert_tutorial.pretrain import distributed as bdist
from bert_tutorial.pretrain.launch import config_args, stop_process_group
from bert_tutorial.pretrain.metrics import read_metrics

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
#: A hung collective must fail the test, not the CI job.
TIMEOUT_S = 300
# 33 held-out sequences: an odd count, so two ranks evaluate 17 and 16 (none dropped, none twice).
TRAIN_SAMPLES, EVAL_SAMPLES, GLOBAL_BATCH, EPOCHS = 64, 33, 16, 2
STEPS = TRAIN_SAMPLES // GLOBAL_BATCH * EPOCHS  # 8 optimizer steps
ATOL = 1e-5


def run_config(data: dict[str, str], output_dir: Path, **overrides: Any) -> TrainConfig:
    """The tiny model of ``tests/tiny.py`` with dropout off (ranks draw different masks)."""
    values: dict[str, Any] = dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=16, batch_size=GLOBAL_BATCH, epochs=EPOCHS, learning_rate=1e-3,
        dropout=0.0, device="cpu", seed=0, log_every_steps=1, output_dir=str(output_dir), **data,
    )
    values.update(overrides)
    return TrainConfig(**values)


def torchrun(*launches: list[str], timeout: float = TIMEOUT_S) -> list[str]:
    """Run torchrun command lines side by side (one per "node"); return their outputs."""
    # The ranks import this file, so they need pytest's pythonpath too (tests/shards.py
    # imports benchmarks/synthetic.py).
    path = [str(REPO), str(TESTS), str(REPO / "benchmarks"), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, path))}
    procs = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
        for args in launches
    ]
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:  # torchrun stops its ranks (they run in sessions of their own)
                if p.poll() is None:
                    stop_process_group(p)
            out, _ = proc.communicate()
            pytest.fail(f"torchrun did not finish in {timeout}s (a hung collective?):\n{out[-4000:]}")
        outputs.append(out)
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{out[-6000:]}"
    return outputs


def weights(run_dir: Path, step: int | None = None) -> dict[str, torch.Tensor]:
    path = ckpt.latest_checkpoint(run_dir) if step is None else ckpt.checkpoint_path(run_dir, step)
    return load_file(path / "model.safetensors")


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")


def train_records(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in read_metrics(run_dir) if r["kind"] == "train"]


def assert_same_losses(run: Path, reference: Path) -> None:
    mine, ref = train_records(run), train_records(reference)
    assert [r["step"] for r in mine] == [r["step"] for r in ref] == list(range(1, STEPS + 1))
    for a, b in zip(mine, ref, strict=True):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)
        assert a["mlm_loss"] == pytest.approx(b["mlm_loss"], rel=1e-5)
        assert a["nsp_loss"] == pytest.approx(b["nsp_loss"], rel=1e-5)


# --- fixtures: the reference and the two distributed jobs ----------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    from tiny import tiny_data

    return tiny_data(tmp_path_factory.mktemp("data"), TRAIN_SAMPLES, EVAL_SAMPLES)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """One process, batch 16: the run every distributed job must reproduce."""
    from bert_tutorial.pretrain.trainer import Trainer

    out = tmp_path_factory.mktemp("reference") / "run"
    result = Trainer(run_config(data, out)).fit()
    assert result.steps == STEPS
    return out


@pytest.fixture(scope="module")
def two_proc(data, tmp_path_factory) -> tuple[Path, str]:
    """``torchrun --nproc_per_node=2 -m bert_tutorial.pretrain --device cpu``, batch 8 per rank."""
    out = tmp_path_factory.mktemp("two_proc") / "run"
    cfg = run_config(data, out, batch_size=GLOBAL_BATCH // 2, save_every_steps=2, keep_last_checkpoints=0)
    (log,) = torchrun(["--standalone", "--nproc_per_node=2", "-m", "bert_tutorial.pretrain", *config_args(cfg)])
    return out, log


@pytest.fixture(scope="module")
def two_nodes(data, tmp_path_factory) -> dict[str, Any]:
    """Two one-process "nodes" at a c10d rendezvous; batch 4 x accumulation 2 per rank, resumed."""
    root = tmp_path_factory.mktemp("two_nodes")
    no_plots = {"plots": False} if "plots" in TrainConfig.__dataclass_fields__ else {}  # saves seconds
    cfg = run_config(data, root / "run", batch_size=GLOBAL_BATCH // 4, grad_accum_steps=2, **no_plots)
    spec = root / "spec.json"
    spec.write_text(json.dumps({"config": cfg.to_dict(), "sigterm_rank1_at_step": 3,
                                "report": str(root / "report.json")}))
    node = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--rdzv-id=bert-test", str(TESTS / "test_distributed.py"),
            str(spec)]
    torchrun(node, node)
    return {"run": root / "run", "config": cfg, **json.loads((root / "report.json").read_text())}


@pytest.fixture(scope="module")
def dropout_runs(data, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """Two 2-process jobs with dropout 0.1: one uninterrupted, one stopped at step 3 and resumed."""
    runs = {}
    for name, stop_at in (("straight", 0), ("resumed", 3)):
        root = tmp_path_factory.mktemp(f"dropout_{name}")
        cfg = run_config(data, root / "run", batch_size=GLOBAL_BATCH // 2, dropout=0.1, plots=False)
        spec = root / "spec.json"
        spec.write_text(json.dumps({"config": cfg.to_dict(), "sigterm_rank1_at_step": stop_at,
                                    "report": str(root / "report.json")}))
        torchrun(["--standalone", "--nproc_per_node=2", str(TESTS / "test_distributed.py"), str(spec)])
        runs[name] = {"run": root / "run", **json.loads((root / "report.json").read_text())}
    return runs


@pytest.mark.slow  # signals and resume under torchrun: two jobs, about 20 s
def test_ranks_draw_different_dropout_masks_and_resume_stays_exact(dropout_runs):
    straight, resumed = dropout_runs["straight"], dropout_runs["resumed"]
    draws = [r["first_draw"] for r in straight["ranks"]]
    assert draws[0] != draws[1]  # rank 1 reseeds with seed + 1: its own dropout masks
    assert [r["stopped_at"] for r in resumed["ranks"]] == [3, 3]
    assert [r["resumed_at"] for r in resumed["ranks"]] == [3, 3]
    a, b = weights(straight["run"]), weights(resumed["run"])
    for name in a:  # every rank's RNG stream came back from the checkpoint: bit for bit
        assert torch.equal(a[name], b[name]), name
    losses = [[(r["step"], r["mlm_loss"], r["nsp_loss"]) for r in train_records(run["run"])]
              for run in (straight, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == STEPS


@pytest.mark.slow  # a signal to one rank of a torchrun job
def test_a_stop_between_log_steps_waits_for_the_next_one_on_every_rank(data, reference, tmp_path):
    """Under DDP the ranks agree on a stop where they log (log_every_steps=3 here). SIGTERM on
    rank 1 alone in step 1 must not send rank 1 into a checkpoint's collectives while rank 0
    goes on into step 2's all-reduce: both stop after step 3, and the resumed run ends with
    the weights of the uninterrupted one."""
    cfg = run_config(data, tmp_path / "run", batch_size=GLOBAL_BATCH // 2, log_every_steps=3, plots=False)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"config": cfg.to_dict(), "sigterm_rank1_at_step": 1,
                                "report": str(tmp_path / "report.json")}))
    torchrun(["--standalone", "--nproc_per_node=2", str(TESTS / "test_distributed.py"), str(spec)],
             timeout=150)
    ranks = json.loads((tmp_path / "report.json").read_text())["ranks"]
    assert [(r["stopped_early"], r["stopped_at"], r["resumed_at"], r["final_step"]) for r in ranks] \
        == [(True, 3, 3, STEPS)] * 2
    assert_same_weights(weights(tmp_path / "run"), weights(reference))


@pytest.mark.slow  # a signal during the ranks' agreement, two torchrun jobs
@pytest.mark.parametrize(("agreement", "stopped_at"), [(2, 2), (1, 1)])
def test_a_stop_that_arrives_during_the_agreement_is_not_lost(data, tmp_path, agreement, stopped_at):
    """SIGTERM on rank 1 alone while it waits in a stop agreement (its all-reduce): the handler
    runs before the reduced flag (False) comes back. That result must not erase the request:
    the ranks agree on it at the next agreement and stop there. Agreement 1 follows the step-0
    evaluation (issue 27: a stop agreed there ends the run before its first step); a request
    that arrives while it waits is agreed at step 1's and the run stops after step 1. One that
    arrives during step 1's agreement is agreed at the next log step (2)."""
    cfg = run_config(data, tmp_path / "run", batch_size=GLOBAL_BATCH // 2, plots=False)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"config": cfg.to_dict(), "sigterm_rank1_at_step": 0,
                                "sigterm_rank1_in_agreement": agreement,
                                "report": str(tmp_path / "report.json")}))
    torchrun(["--standalone", "--nproc_per_node=2", str(TESTS / "test_distributed.py"), str(spec)],
             timeout=120)
    ranks = json.loads((tmp_path / "report.json").read_text())["ranks"]
    assert [(r["stopped_early"], r["stopped_at"], r["resumed_at"], r["final_step"]) for r in ranks] \
        == [(True, stopped_at, stopped_at, STEPS)] * 2


# --- 2 processes == 1 process ------------------------------------------------------------------


def test_two_processes_match_one_process_with_same_global_batch(two_proc, reference):
    run, log = two_proc
    assert "world size 2" in log
    assert_same_weights(weights(run), weights(reference))
    assert_same_losses(run, reference)
    evals = [[r for r in read_metrics(d) if r["kind"] == "eval"] for d in (run, reference)]
    assert [e["step"] for e in evals[0]] == [e["step"] for e in evals[1]]
    assert {4, 8} <= {e["step"] for e in evals[0]}  # every epoch end
    for a, b in zip(*evals, strict=True):  # evaluation is split over the ranks and summed
        assert a["masked_tokens"] == b["masked_tokens"] and a["sequences"] == b["sequences"] == EVAL_SAMPLES
        assert a["mlm_loss"] == pytest.approx(b["mlm_loss"], rel=1e-5)
        assert a["mlm_accuracy"] == b["mlm_accuracy"]


def test_one_process_under_torchrun_is_ddp_of_one_and_matches_one_process(data, reference, tmp_path):
    """torchrun --nproc_per_node=1 (one GPU on Colab): a process group of one and the DDP wrapper,
    the code path of many processes, with the same numbers as a plain process."""
    out = tmp_path / "run"
    (log,) = torchrun(["--standalone", "--nproc_per_node=1", "-m", "bert_tutorial.pretrain",
                       *config_args(run_config(data, out))])
    assert "world size 1 (DDP)" in log
    assert_same_weights(weights(out), weights(reference))
    assert_same_losses(out, reference)


def test_masked_lm_only_with_dynamic_masking_under_ddp_matches_one_process(tmp_path_factory):
    """--objective mlm --masking dynamic: the masks are keyed by sequence, not by rank, and the
    frozen NSP head holds no gradient DDP would wait for."""
    from tiny import tiny_data

    from bert_tutorial.pretrain.trainer import Trainer

    root = tmp_path_factory.mktemp("mlm_dynamic")
    data = tiny_data(root / "data", TRAIN_SAMPLES, EVAL_SAMPLES, mask_fraction=0.15)
    options = dict(objective="mlm", masking="dynamic", plots=False)
    one = root / "one"
    Trainer(run_config(data, one, **options)).fit()
    two = root / "two"
    (log,) = torchrun(["--standalone", "--nproc_per_node=2", "-m", "bert_tutorial.pretrain",
                       *config_args(run_config(data, two, batch_size=GLOBAL_BATCH // 2, **options))])
    assert "world size 2" in log
    assert_same_weights(weights(two), weights(one))
    mine, ref = train_records(two), train_records(one)
    assert [r["step"] for r in mine] == [r["step"] for r in ref] == list(range(1, STEPS + 1))
    for a, b in zip(mine, ref, strict=True):
        assert "nsp_loss" not in a and a["mlm_loss"] == pytest.approx(b["mlm_loss"], rel=1e-5)


def test_grad_accumulation_with_no_sync_matches_one_process(two_nodes, reference):
    """2 ranks x batch 4 x 2 micro-batches == 1 process x batch 16; all-reduce only on the last."""
    assert_same_weights(weights(two_nodes["run"]), weights(reference))
    assert_same_losses(two_nodes["run"], reference)
    for rank in two_nodes["ranks"]:
        # One micro-batch per step skips the gradient all-reduce.
        assert rank["no_sync_entries"] == STEPS * (two_nodes["config"].grad_accum_steps - 1)


def test_resume_under_ddp_continues_the_same_trajectory(two_nodes):
    """SIGTERM on rank 1 in step 3 (mid-epoch) stopped both ranks there; a new Trainer resumed."""
    assert [(r["stopped_early"], r["stopped_at"]) for r in two_nodes["ranks"]] == [(True, 3)] * 2
    assert [r["resumed_at"] for r in two_nodes["ranks"]] == [3, 3]
    assert [r["final_step"] for r in two_nodes["ranks"]] == [STEPS, STEPS]
    # Metrics were rewound to the checkpoint and continued: every step logged exactly once.
    assert [r["step"] for r in train_records(two_nodes["run"])] == list(range(1, STEPS + 1))


# --- data: each rank its own samples ---------------------------------------------------------


def one_process_batches(data: dict[str, str], epoch: int) -> list[list[int]]:
    dataset = PretrainingDataset(find_shards(data["train_data"]))
    sampler = ShardedSampler(dataset, shuffle=True, seed=0)
    sampler.set_epoch(epoch)
    loader = make_dataloader(dataset, GLOBAL_BATCH, sampler=sampler, drop_last=True)
    return [list(b) for b in loader.batch_sampler]


def test_ranks_read_disjoint_samples_in_a_real_job(two_nodes, data):
    """Samples each rank's dataset actually served, recorded inside the two-node job."""
    per_rank = two_nodes["ranks"]
    assert [r["rank"] for r in per_rank] == [0, 1]
    assert [r["local_rank"] for r in per_rank] == [0, 0]  # one process per node
    per_step = GLOBAL_BATCH // 2
    for epoch in range(EPOCHS):
        span = slice(epoch * TRAIN_SAMPLES // 2, (epoch + 1) * TRAIN_SAMPLES // 2)
        seen = [r["train_samples"][span] for r in per_rank]
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == list(range(TRAIN_SAMPLES))  # the whole epoch, once
        # Step k of the ranks together is step k of one process with the global batch.
        for k, expected in enumerate(one_process_batches(data, epoch)):
            step = slice(k * per_step, (k + 1) * per_step)
            assert sorted(seen[0][step] + seen[1][step]) == sorted(expected)
    # Every evaluation pass is split over the ranks too.
    passes = sum(r["kind"] == "eval" for r in read_metrics(two_nodes["run"]))
    evals = [r["eval_samples"] for r in per_rank]
    shares = [len(range(rank, EVAL_SAMPLES, 2)) for rank in (0, 1)]  # 17 and 16
    assert passes >= EPOCHS and [len(e) for e in evals] == [passes * n for n in shares]
    for k in range(passes):
        part = [set(e[k * n:(k + 1) * n]) for e, n in zip(evals, shares, strict=True)]
        assert not part[0] & part[1] and part[0] | part[1] == set(range(EVAL_SAMPLES))


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("start_step", [0, 1, 3])
def test_sampler_ranks_together_give_the_one_process_batches(data, world_size, start_step):
    """Also when resuming mid-epoch (start = samples done / world size), any world size."""
    dataset = PretrainingDataset(find_shards(data["train_data"]))
    per_rank = GLOBAL_BATCH // world_size
    done = start_step * GLOBAL_BATCH
    samplers = [ShardedSampler(dataset, shuffle=True, seed=0, rank=r, world_size=world_size)
                for r in range(world_size)]
    for sampler in samplers:  # as the Trainer moves its sampler on resume
        sampler.set_epoch(1)
        sampler.set_start(done // world_size)
    loaders = [make_dataloader(dataset, per_rank, drop_last=True, sampler=s) for s in samplers]
    ranks = [[list(b) for b in loader.batch_sampler] for loader in loaders]
    expected = one_process_batches(data, epoch=1)[start_step:]
    assert all(len(r) == len(expected) for r in ranks)
    for k, batch in enumerate(expected):
        parts = [set(r[k]) for r in ranks]
        assert sum(map(len, parts)) == len(set().union(*parts))  # disjoint
        assert set().union(*parts) == set(batch)


# --- only rank 0 writes; its checkpoints work in one process ----------------------------------


def test_only_rank_zero_writes(two_proc, reference):
    run, log = two_proc
    # Both ranks reach every log call; a second writer would duplicate or garble lines.
    records = [(r["kind"], r["step"]) for r in read_metrics(run)]
    assert records == [(r["kind"], r["step"]) for r in read_metrics(reference)]
    assert [s for kind, s in records if kind == "train"] == list(range(1, STEPS + 1))
    assert [p.name for p in ckpt.list_checkpoints(run)] == [f"checkpoint-{s:08d}" for s in (2, 4, 6, 8)]
    assert not list((run / ckpt.CHECKPOINTS).glob(".tmp-*"))
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in reference.iterdir())
    assert log.count("world size 2") == 1 and log.count("Final eval") == 1


def test_checkpoint_of_two_processes_loads_in_transformers(two_proc):
    from transformers import BertForPreTraining

    run, _ = two_proc
    path = ckpt.latest_checkpoint(run)
    model = BertForPreTraining.from_pretrained(path)
    saved = weights(run)
    for name, value in model.state_dict().items():
        if name in saved:
            assert torch.equal(value, saved[name]), name
    state = ckpt.load_training_state(path)
    assert state["world_size"] == 2 and state["progress"]["step"] == STEPS


def test_checkpoint_of_two_processes_resumes_in_one_process(two_proc, reference, tmp_path, capsys):
    """Step 6 of the 2-process job, continued by one process with the same global batch."""
    from bert_tutorial.pretrain.trainer import CONFIG_FILE, Trainer

    run, _ = two_proc
    out = tmp_path / "run"
    shutil.copytree(ckpt.checkpoint_path(run, 6), ckpt.checkpoint_path(out, 6))
    original = TrainConfig.from_dict(json.loads((run / CONFIG_FILE).read_text()))
    cfg = TrainConfig.from_dict(original.to_dict() | {"batch_size": GLOBAL_BATCH, "output_dir": str(out)})
    cfg.to_json(out / CONFIG_FILE)  # the same run, its global batch now in one process
    trainer = Trainer(cfg)
    assert trainer.dist.world_size == 1 and trainer.progress.step == 6
    result = trainer.fit()
    assert "Resumed from" in capsys.readouterr().out
    assert result.steps == STEPS
    assert_same_weights(weights(out), weights(run))
    assert_same_weights(weights(out), weights(reference))
    resumed = train_records(out)
    assert [r["step"] for r in resumed] == [7, 8]
    for a, b in zip(resumed, train_records(reference)[6:], strict=True):
        assert a["mlm_loss"] == pytest.approx(b["mlm_loss"], rel=1e-5)


# --- the helpers themselves, in one process ----------------------------------------------------


def test_single_process_helpers_are_no_ops(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = bdist.init_distributed("cpu")
    assert info == bdist.DistInfo() and info.is_main and not info.enabled
    assert not bdist.is_initialized()
    t = torch.tensor([2.0])
    assert bdist.all_reduce_sum(t) is t and t.item() == 2.0
    assert bdist.any_rank(True, torch.device("cpu")) is True
    assert bdist.any_rank(False, torch.device("cpu")) is False
    assert bdist.gather_objects({"a": 1}) == [{"a": 1}]
    assert bdist.broadcast_object("x") == "x"
    bdist.barrier()
    bdist.cleanup_distributed()


def test_dist_info_from_env():
    assert bdist.dist_info_from_env({}) == bdist.DistInfo()
    assert bdist.dist_info_from_env({"WORLD_SIZE": "1", "RANK": "0"}) == bdist.DistInfo()
    one = bdist.dist_info_from_env({"WORLD_SIZE": "1", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert one.enabled and one.is_main and one.world_size == 1  # torchrun --nproc_per_node=1: a group of one
    info = bdist.dist_info_from_env({"WORLD_SIZE": "16", "RANK": "9", "LOCAL_RANK": "1"})
    assert (info.rank, info.local_rank, info.world_size, info.is_main, info.enabled) == (9, 1, 16, False, True)
    with pytest.raises(RuntimeError, match="torchrun"):
        bdist.dist_info_from_env({"WORLD_SIZE": "2"})


def test_backend_nccl_on_gpu_gloo_on_cpu(monkeypatch):
    assert bdist.backend_for("cpu") == "gloo"
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    assert bdist.backend_for("cuda") == "nccl"
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: False)
    assert bdist.backend_for("cuda") == "gloo"


def test_more_processes_than_gpus_fails_clearly(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match="nproc_per_node=1"):
        bdist.init_distributed("cuda")
    assert not bdist.is_initialized()


# --- the worker of the two-node job ---------------------------------------------------------


def _worker(spec_path: str) -> None:
    """Runs in each rank: collectives check, then train (stop at N steps, resume), recording."""
    from torch.nn.parallel import DistributedDataParallel

    from bert_tutorial.pretrain import trainer as training
    from bert_tutorial.pretrain.trainer import Trainer

    spec = json.loads(Path(spec_path).read_text())
    info = bdist.init_distributed("cpu")
    cpu = torch.device("cpu")
    collectives = {
        "sum": bdist.all_reduce_sum(torch.tensor([info.rank + 1.0])).item(),
        "any": bdist.any_rank(info.rank == 1, cpu),
        "none": bdist.any_rank(False, cpu),
        "gather": bdist.gather_objects(info.rank),
        "broadcast": bdist.broadcast_object(f"from rank {info.rank}"),
    }

    served: dict[int, list[int]] = {}
    getitem = PretrainingDataset.__getitem__

    def recording_getitem(self, index):
        served.setdefault(id(self), []).append(int(index))
        return getitem(self, index)

    PretrainingDataset.__getitem__ = recording_getitem
    entries = {"n": 0}
    no_sync = DistributedDataParallel.no_sync

    def counting_no_sync(self):
        entries["n"] += 1
        return no_sync(self)

    DistributedDataParallel.no_sync = counting_no_sync

    # Preemption: rank 1 alone gets SIGTERM during step N; the ranks must agree to stop
    # after that step, save, and return (the second Trainer then resumes the checkpoint).
    optimizer_step = training.train_step
    calls = {"n": 0}

    def preempted_step(*args, **kwargs):
        result = optimizer_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == spec["sigterm_rank1_at_step"] and info.rank == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    training.train_step = preempted_step
    # A SIGTERM that reaches rank 1 while it waits in the stop agreement's all-reduce.
    agree = training.any_rank
    agreements = {"n": 0}

    def signalled_agreement(flag, device):
        agreed = agree(flag, device)
        agreements["n"] += 1
        if agreements["n"] == spec.get("sigterm_rank1_in_agreement") and info.rank == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before this call returns
        return agreed

    training.any_rank = signalled_agreement
    cfg = TrainConfig.from_dict(spec["config"])
    first = Trainer(cfg)
    with torch.random.fork_rng():  # peek at the stream dropout will draw from, leaving it untouched
        first_draw = torch.rand(4).tolist()
    stopped = first.fit()
    second = Trainer(cfg)
    resumed_at = second.progress.step
    result = second.fit()
    trainers = (first, second)
    mine = {
        "rank": info.rank,
        "local_rank": info.local_rank,
        "world_size": info.world_size,
        "collectives": collectives,
        "no_sync_entries": entries["n"],
        "first_draw": first_draw,
        "stopped_early": stopped.stopped_early,
        "stopped_at": stopped.steps,
        "resumed_at": resumed_at,
        "final_step": result.steps,
        "train_samples": [i for t in trainers for i in served.get(id(t.train_data), [])],
        "eval_samples": [i for t in trainers for i in served.get(id(t.eval_data), [])],
    }
    everyone = bdist.gather_objects(mine)
    if info.is_main:
        Path(spec["report"]).write_text(json.dumps({"ranks": everyone}))
    bdist.cleanup_distributed()


def test_collectives_across_two_processes(two_nodes):
    for r in two_nodes["ranks"]:
        assert r["world_size"] == 2
        assert r["collectives"] == {"sum": 3.0, "any": True, "none": False, "gather": [0, 1],
                                    "broadcast": "from rank 0"}


if __name__ == "__main__":
    _worker(sys.argv[1])


@pytest.mark.slow  # one more torchrun job: the fast suite's DDP tests cover the plain path
def test_the_speed_switches_under_ddp_match_the_stock_one_process_run(data, reference, tmp_path):
    """--unpad --fused-qkv --fold-clipping (fused AdamW) --half-precision-layernorm in 2 gloo
    processes: each rank packs its own batches, and the run is the stock one-process run."""
    switches = dict(unpad=True, fused_qkv=True, fold_clipping=True, fused_adamw=True,
                    half_precision_layernorm=True, num_workers=1)
    out = tmp_path / "run"
    (log,) = torchrun(["--standalone", "--nproc_per_node=2", "-m", "bert_tutorial.pretrain",
                       *config_args(run_config(data, out, batch_size=GLOBAL_BATCH // 2, **switches))])
    assert "world size 2" in log
    assert_same_weights(weights(out), weights(reference))
    assert_same_losses(out, reference)
