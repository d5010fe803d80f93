"""Real `dskd slurm submit` jobs on the session's one-node SLURM cluster: 2-task CPU DDP `dskd train`,
and preemption (SIGUSR1 -> checkpoint -> requeue -> resume -> completion)."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import pytest

from dskd.cli import main
from dskd.core.trusted_load import read_checkpoint

from .tiny_experiment import make_experiment

pytestmark = pytest.mark.slurm

DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def submit(cluster, monkeypatch, capsys, root: Path, config: Path) -> tuple[str, Path]:
    """`dskd slurm submit CONFIG --nodes 1 --gpus-per-node 0 --tasks-per-node 2`; return (job id, log)."""
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    monkeypatch.chdir(root)
    args = [
        "--nodes",
        "1",
        "--gpus-per-node",
        "0",
        "--tasks-per-node",
        "2",
        "--cpus-per-task",
        "1",
        "--mem",
        "2G",
    ]
    assert main(["slurm", "submit", str(config), *args]) == 0
    out = capsys.readouterr().out
    job_id = re.search(r"submitted job (\d+)", out).group(1)
    log = Path(re.search(r"logs: (\S+)", out).group(1))
    assert log == root / "runs" / "slurm-kd" / "seed-0" / "slurm" / f"{job_id}.out"
    return job_id, log


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def global_step(checkpoint: Path) -> int:
    return read_checkpoint(checkpoint)["global_step"]


def logged_steps(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_two_task_ddp_job_trains_and_logs(slurm_cluster, monkeypatch, capsys, tmp_path):
    config = make_experiment(tmp_path, max_steps=6, checkpoint_every=100)
    job_id, log = submit(slurm_cluster, monkeypatch, capsys, tmp_path, config)
    info = slurm_cluster.wait_job(job_id, DONE, timeout=150)
    text = read(log)
    assert info["JobState"] == "COMPLETED", text[-4000:]
    assert ", WANDB_MODE=disabled, logs in" in text  # logging.wandb=false: set explicitly in the job
    assert (info["NumCPUs"], info["MinMemoryNode"]) == ("2", "2G")  # 2 tasks x 1 core, --mem 2G
    port = 15000 + int(job_id) % 10000
    for rank in (0, 1):  # SLURM_PROCID/LOCALID/NODEID/NTASKS and the rendezvous, as each task saw them
        assert f"rank {rank}/2 (node 0, local {rank}), main {slurm_cluster.host}:{port}" in text
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in text  # Lightning's view
    run = tmp_path / "runs" / "slurm-kd" / "seed-0"
    assert logged_steps(run) == list(range(1, 7))  # a row at each of the 6 steps done
    assert json.loads(read(run / "summary.json"))["global_step"] == 6


def test_preempted_job_checkpoints_requeues_and_resumes(slurm_cluster, monkeypatch, capsys, tmp_path):
    steps = 120  # within the first epoch
    config = make_experiment(tmp_path, max_steps=steps, checkpoint_every=5)
    job_id, log = submit(slurm_cluster, monkeypatch, capsys, tmp_path, config)
    run = tmp_path / "runs" / "slurm-kd" / "seed-0"
    deadline = time.monotonic() + 150
    while not (run / "checkpoints" / "last.ckpt").exists():  # training is past step 5
        assert time.monotonic() < deadline, read(log)[-4000:]
        assert slurm_cluster.job_info(job_id)["JobState"] not in DONE, read(log)[-4000:]
        time.sleep(0.2)
    slurm_cluster.run("scancel", "--signal=USR1", job_id)  # what --signal=USR1@90 sends before the time limit
    info = slurm_cluster.wait_job(job_id, DONE, timeout=200)
    text = read(log)
    print(text)
    assert info["JobState"] == "COMPLETED", text[-4000:]
    assert info["Restarts"] == "1"

    first, second = text.split(f"== dskd job {job_id} (restart 1)")
    hpc = run / "checkpoints" / "hpc_ckpt_1.ckpt"
    assert f"[dskd slurm] SIGUSR1: saved {hpc}" in first and f"[dskd slurm] requeued job {job_id}" in first
    saved_step = global_step(hpc)
    assert 5 <= saved_step < steps
    # The requeued run restored the signal-time state: the hpc checkpoint, or the last.ckpt that
    # ModelCheckpoint writes right after it when the signal came at one of its steps (5, 10, ...).
    restored = Path(re.search(r"Restored all states from the checkpoint at (\S+)", second).group(1))
    assert restored == hpc or (restored == run / "checkpoints" / "last.ckpt" and saved_step % 5 == 0)
    assert logged_steps(run) == list(range(1, steps + 1)), "every step logged once across both runs"
    assert json.loads(read(run / "summary.json"))["global_step"] == steps
