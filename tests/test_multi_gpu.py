"""The multi-GPU notebook's helpers: the torchrun command, the CPU fallback, the launch itself."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from tiny import tiny_config

from bert_tutorial.config import REPO_ROOT, TrainConfig
from bert_tutorial.pretrain import launch
from bert_tutorial.pretrain.cli import config_from_args
from bert_tutorial.pretrain.launch import (
    config_args,
    gpu_report,
    launch_env,
    launch_torchrun,
    plan_launch,
    torchrun_command,
)
from bert_tutorial.pretrain.metrics import read_metrics


def test_torchrun_command_single_node():
    cmd = torchrun_command(4, ["--epochs", "1", "--batch-size", "8"])
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
                   "-m", "bert_tutorial.pretrain", "--epochs", "1", "--batch-size", "8"]


def test_torchrun_command_multi_node():
    cmd = torchrun_command(8, ["--full"], nnodes=2, rdzv_endpoint="node0:29500", rdzv_id="job7",
                           python="python3")
    assert cmd == ["python3", "-m", "torch.distributed.run", "--nnodes=2", "--rdzv-backend=c10d",
                   "--rdzv-endpoint=node0:29500", "--rdzv-id=job7", "--nproc_per_node=8",
                   "-m", "bert_tutorial.pretrain", "--full"]
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        torchrun_command(8, nnodes=2)
    with pytest.raises(ValueError, match="nproc"):
        torchrun_command(0)


@pytest.mark.parametrize("gpus", [0, 1])
def test_fewer_than_two_gpus_fall_back_to_two_cpu_processes(gpus):
    plan = plan_launch(gpu_count=gpus)
    assert (plan.nproc, plan.device, plan.backend) == (2, "cpu", "gloo")
    assert plan.device_args == ["--device", "cpu"]
    assert "gloo" in plan.reason
    assert plan_launch(3, gpu_count=gpus).nproc == 3  # any number of CPU processes


def test_a_one_gpu_runtime_can_run_ddp_on_its_gpu(monkeypatch):
    """Colab: the default shows 2 CPU processes; nproc=1 is DDP on the one GPU."""
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    plan = plan_launch(1, gpu_count=1)
    assert (plan.nproc, plan.device, plan.backend, plan.device_args) == (1, "cuda", "nccl", [])
    assert "only GPU" in plan.reason
    assert plan_launch(1, gpu_count=0).device == "cpu"


def test_one_process_per_gpu_with_nccl(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    plan = plan_launch(gpu_count=4)
    assert (plan.nproc, plan.device, plan.backend, plan.device_args) == (4, "cuda", "nccl", [])
    assert plan_launch(2, gpu_count=4).nproc == 2
    with pytest.raises(ValueError, match="one GPU per process"):
        plan_launch(5, gpu_count=4)
    with pytest.raises(ValueError, match="nproc"):
        plan_launch(0, gpu_count=4)


def test_config_args_round_trip():
    cfg = TrainConfig(batch_size=8, learning_rate=3e-4, dropout=0.0, eval_data=None, resume=False,
                      sparse_mlm_head=False, adam_betas=(0.9, 0.98), precision="bf16", max_steps=5,
                      fused_adamw=True)
    args = config_args(cfg)
    parsed = config_from_args(args)
    assert json.dumps(parsed.to_dict()) == json.dumps(cfg.to_dict())  # (adam_betas parse as a list)
    assert "--no-resume" in args and args[args.index("--eval-data") + 1] == "none"
    assert config_args(TrainConfig()) == []
    everything = config_from_args(config_args(TrainConfig(), only_changed=False))
    assert json.dumps(everything.to_dict()) == json.dumps(TrainConfig().to_dict())


def test_launch_env_shares_the_cpu_and_finds_the_package(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    for name in ("OMP_NUM_THREADS", "PYTHONUNBUFFERED"):
        monkeypatch.delenv(name, raising=False)
    env = launch_env(2)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO_ROOT), "/elsewhere"]
    assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert env["PYTHONUNBUFFERED"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert launch_env(2)["OMP_NUM_THREADS"] == "3"  # the user's choice wins


def test_gpu_report_without_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    report = gpu_report()
    assert "No CUDA GPU" in report and "2 CPU processes with gloo" in report


def test_gpu_report_with_two_gpus(monkeypatch):
    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 * 2**30, major=9, minor=0,
                            multi_processor_count=132)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "can_device_access_peer", lambda a, b: True)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    gpus = launch.list_gpus()
    assert [g.index for g in gpus] == [0, 1] and all(g.bf16 for g in gpus)
    report = gpu_report()
    assert "cuda:0  NVIDIA H100" in report and "cuda:1" in report and "80.0 GiB" in report
    assert "NCCL available: yes" in report and "one per GPU" in report


@pytest.mark.slow
def test_launch_torchrun_trains_with_two_cpu_processes(tmp_path, monkeypatch):
    """The notebook's launch, end to end: 2 gloo processes from a TrainConfig, output streamed."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    cfg = tiny_config(tmp_path, epochs=1, batch_size=8, eval_data=None, log_every_steps=2)
    out = io.StringIO()
    result = launch_torchrun(args=cfg, echo=out, timeout=300)
    assert result.ok and result.seconds > 0
    assert result.command[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  "--nproc_per_node=2"]
    assert result.command.count("--device") == 1  # the config's own --device cpu, not added twice
    streamed = out.getvalue()
    assert streamed.startswith("$ ") and "world size 2" in streamed and "world size 2" in result.output
    train = [r for r in read_metrics(cfg.output_dir) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4]  # 64 samples / (8 x 2 ranks), logged by rank 0 only


def test_launch_torchrun_failure_raises(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as failure:
        launch_torchrun(["--whatever"], 1, program=("-m", "bert_tutorial.no_such_module"),
                        echo=io.StringIO(), timeout=120)
    assert failure.value.returncode != 0 and "no_such_module" in failure.value.output
    # The message itself names the cause: a notebook runner may show nothing but the exception.
    assert "No module named bert_tutorial.no_such_module" in str(failure.value)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just unreaped
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_stop_terminates_the_whole_process_group():
    """An interrupted launch stops torchrun *and* its workers (SIGTERM to the group)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
         "print(p.pid, flush=True); time.sleep(60)"],
        start_new_session=True, stdout=subprocess.PIPE, text=True,
    )
    worker = int(proc.stdout.readline())
    start = time.perf_counter()
    launch.stop_process_group(proc)
    # well within STOP_GRACE_S: the SIGTERM stopped it, not the SIGKILL after the grace
    assert proc.returncode == -15 and time.perf_counter() - start < 10
    deadline = time.monotonic() + 5
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)
