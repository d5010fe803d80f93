"""SLURM variables -> ranks: our mapping (docs/slurm.md) against Lightning's SLURMEnvironment and Trainer;
the requeue callback's order on a real (1-process) Lightning fit."""

from __future__ import annotations

import csv
import os
import signal
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment

from dskd.training import slurm
from dskd.training.slurm import SlurmRanks, SlurmRequeue, first_host, resume_path, slurm_plugins

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


class _SignalledAt(pl.LightningModule):
    """A linear model that gets SIGUSR1 during step ``signal_at`` (as SLURM sends it before the time
    limit) and notes the SIGTERM handler in force at each step."""

    def __init__(self, signal_at: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.signal_at = signal_at
        self.sigterm_handlers: list = []

    def training_step(self, batch, batch_idx):
        if self.trainer.global_step + 1 == self.signal_at:
            os.kill(os.getpid(), signal.SIGUSR1)
        self.sigterm_handlers.append(signal.getsignal(signal.SIGTERM))
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 2)), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _StopWaiting(Exception):
    pass


def _fit_requeued(tmp_path, monkeypatch, requeued: bool):
    """A fit signalled at step 3 whose ``scontrol requeue`` notes the CSV rows on disk and the SIGTERM
    handler and returns ``requeued``, after sending SIGTERM if so (SLURM does at once); the wait ends
    the fit."""
    seen: dict = {}

    def requeue() -> bool:
        with open(tmp_path / "metrics.csv", newline="") as f:
            seen["rows"] = sum(1 for r in csv.DictReader(f) if r["train/loss"])
        seen["sigterm"] = signal.getsignal(signal.SIGTERM)
        if requeued:
            os.kill(os.getpid(), signal.SIGTERM)
        return requeued

    def sleep(seconds: float) -> None:
        raise _StopWaiting

    monkeypatch.setattr(slurm, "requeue_job", requeue)
    monkeypatch.setattr(slurm, "time", SimpleNamespace(sleep=sleep))
    module = _SignalledAt(signal_at=3)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=6,
        logger=CSVLogger(tmp_path, name="", version="", flush_logs_every_n_steps=1000),  # on save only
        log_every_n_steps=1,
        callbacks=[SlurmRequeue(tmp_path / "checkpoints")],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return trainer, module, seen


def test_requeue_comes_after_the_checkpoint_steps_row_is_on_disk_and_ignores_sigterm(tmp_path, monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    trainer, module, seen = _fit_requeued(tmp_path, monkeypatch, requeued=True)
    with pytest.raises(_StopWaiting):
        trainer.fit(module)
    hpc = torch.load(tmp_path / "checkpoints" / "hpc_ckpt_1.ckpt", weights_only=True)  # written here
    assert hpc["global_step"] == 3
    assert seen["rows"] == 3  # steps 1-3: the row of the checkpoint's step reached disk before the requeue
    assert seen["sigterm"] == signal.SIG_IGN  # Lightning's handler would start a collective
    assert len(module.sigterm_handlers) == 3  # no step after the requeue
    assert signal.getsignal(signal.SIGTERM) == before  # Lightning's teardown puts the original back


def test_a_failed_requeue_gives_sigterm_back_and_training_goes_on(tmp_path, monkeypatch):
    trainer, module, seen = _fit_requeued(tmp_path, monkeypatch, requeued=False)
    with pytest.warns(UserWarning, match="could not be requeued; training goes on"):
        trainer.fit(module)
    assert trainer.global_step == 6 and seen["rows"] == 3
    lightnings = module.sigterm_handlers[0]
    assert lightnings not in (signal.SIG_IGN, signal.SIG_DFL)
    assert module.sigterm_handlers[3:] == [lightnings] * 3  # in force again after the failed requeue
