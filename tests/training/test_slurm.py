"""SLURM variables -> ranks: our mapping (docs/slurm.md) against Lightning's SLURMEnvironment and Trainer."""

from __future__ import annotations

import os

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.environments import SLURMEnvironment

from dskd.training.slurm import SlurmRanks, first_host, resume_path, slurm_plugins

SLURM_KEYS = ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_NAME", "MASTER_ADDR", "MASTER_PORT")


def task_env(procid: int, nodes: int = 2, per_node: int = 8, nodelist: str = "gpu[07-08]") -> dict[str, str]:
    """The variables srun gives task ``procid`` of a job of ``nodes`` x ``per_node`` tasks."""
    return {
        "SLURM_JOB_ID": "4321987",
        "SLURM_JOB_NAME": "tiny-kd",
        "SLURM_NODELIST": nodelist,
        "SLURM_JOB_NODELIST": nodelist,
        "SLURM_NNODES": str(nodes),
        "SLURM_NTASKS": str(nodes * per_node),
        "SLURM_NTASKS_PER_NODE": str(per_node),
        "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(procid % per_node),
        "SLURM_NODEID": str(procid // per_node),
    }


@pytest.fixture
def clean_env(monkeypatch):
    for key in (*SLURM_KEYS, "SLURM_NODELIST", "SLURM_NNODES", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.mark.parametrize("procid", [0, 7, 8, 13])
def test_ranks_match_lightning(clean_env, procid):
    env = task_env(procid)
    for key, value in env.items():
        clean_env.setenv(key, value)
    ours = SlurmRanks.from_env(env)
    lightning = SLURMEnvironment()
    assert ours.global_rank == lightning.global_rank() == procid
    assert ours.local_rank == lightning.local_rank() == procid % 8
    assert ours.node_rank == lightning.node_rank() == procid // 8
    assert ours.world_size == lightning.world_size() == 16
    assert ours.main_address == lightning.main_address == "gpu07"
    assert ours.main_port == lightning.main_port == 15000 + 1987


def test_master_variables_win(clean_env):
    env = {**task_env(3), "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500"}
    for key, value in env.items():
        clean_env.setenv(key, value)
    ours = SlurmRanks.from_env(env)
    assert (ours.main_address, ours.main_port) == ("10.0.0.5", 29500)
    assert (SLURMEnvironment().main_address, SLURMEnvironment().main_port) == ("10.0.0.5", 29500)


@pytest.mark.parametrize(
    "nodelist, first",
    [
        ("node17", "node17"),
        ("gpu[03-05,09]", "gpu03"),
        ("gpu[12]", "gpu12"),
        ("a100-n[1-4],h100-n2", "a100-n1"),
        ("cn001,cn002", "cn001"),
    ],
)
def test_first_host(nodelist, first):
    assert first_host(nodelist) == first == SLURMEnvironment.resolve_root_node_address(nodelist)


def test_trainer_takes_ranks_from_slurm(clean_env):
    """The plugin reaches a real Trainer: 2 nodes x 2 CPU processes, this task is rank 3 on node 1."""
    for key, value in task_env(3, nodes=2, per_node=2, nodelist="cpu[1-2]").items():
        clean_env.setenv(key, value)
    (plugin,) = slurm_plugins()
    assert plugin.auto_requeue and plugin.requeue_signal.name == "SIGUSR1"
    trainer = Trainer(
        accelerator="cpu", devices=2, num_nodes=2, strategy="ddp", plugins=[plugin], logger=False
    )
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (3, 1, 1, 4)
    assert trainer.strategy.cluster_environment.main_address == "cpu1"


def test_no_plugins_outside_srun(clean_env):
    assert slurm_plugins() == []
    for key, value in task_env(0).items():
        clean_env.setenv(key, value)
    clean_env.setenv("SLURM_JOB_NAME", "interactive")  # Lightning's opt-out for salloc shells
    assert slurm_plugins() == []


def test_resume_path_takes_the_newest_checkpoint(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert resume_path(tmp_path, None) is None
    assert resume_path(tmp_path, str(last)) == str(last)
    for n in (1, 2, 10, 9):  # numeric order: hpc_ckpt_10 is the newest
        (tmp_path / f"hpc_ckpt_{n}.ckpt").write_bytes(b"")
    (tmp_path / "hpc_ckpt_11.ckpt.tmp").write_bytes(b"")
    os.utime(last, (1000, 1000))
    assert resume_path(tmp_path, str(last)) == str(tmp_path / "hpc_ckpt_10.ckpt")
    assert resume_path(tmp_path, None) == str(tmp_path / "hpc_ckpt_10.ckpt")
    os.utime(last, (4e9, 4e9))  # last.ckpt written after the requeue: it wins
    assert resume_path(tmp_path, str(last)) == str(last)
