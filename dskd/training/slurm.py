"""SLURM inside a training job: ranks from SLURM's variables, checkpoint and requeue on SIGUSR1, resume.

Each ``srun`` task of a job submitted by :mod:`dskd.launch.slurm` is one Lightning process whose
ranks come from SLURM's variables (:class:`SlurmRanks`, docs/slurm.md). :func:`slurm_plugins` gives
the Trainer Lightning's ``SLURMEnvironment`` and :func:`slurm_callbacks` the :class:`SlurmRequeue`
callback: on SIGUSR1 (sent 90 s before the time limit) every process saves ``hpc_ckpt_N.ckpt`` in
the run's checkpoint folder at the same step, rank 0 requeues the job, and the requeued job resumes from it
(:func:`resume_path`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from dskd.training.checkpoints import save_for_resume

REQUEUE_SIGNAL = "USR1"
SIGNAL_SECONDS = 90
"""Seconds before the time limit at which SLURM sends the requeue signal."""
_HPC = re.compile(r"hpc_ckpt_(\d+)\.ckpt")


@dataclass(frozen=True)
class SlurmRanks:
    """How a task's SLURM variables map to the ranks of distributed training (see docs/slurm.md)."""

    global_rank: int
    """SLURM_PROCID."""
    local_rank: int
    """SLURM_LOCALID."""
    node_rank: int
    """SLURM_NODEID."""
    world_size: int
    """SLURM_NTASKS."""
    main_address: str
    """MASTER_ADDR, else the first host of SLURM_NODELIST."""
    main_port: int
    """MASTER_PORT, else 15000 + the last 4 digits of SLURM_JOB_ID."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SlurmRanks:
        port = env.get("MASTER_PORT") or str(15000 + int(env["SLURM_JOB_ID"][-4:]))
        return cls(
            global_rank=int(env["SLURM_PROCID"]),
            local_rank=int(env["SLURM_LOCALID"]),
            node_rank=int(env["SLURM_NODEID"]),
            world_size=int(env["SLURM_NTASKS"]),
            main_address=env.get("MASTER_ADDR") or first_host(env["SLURM_NODELIST"]),
            main_port=int(port),
        )


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,09],cpu1`` -> ``gpu03``."""
    head = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if head is None:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = head.groups()
    return prefix + (re.split(r"[,-]", ranges)[0] if ranges else "")


def under_srun(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a task of a SLURM job step (launched by srun, not an interactive shell)."""
    env = os.environ if env is None else env
    return (
        "SLURM_JOB_ID" in env
        and "SLURM_PROCID" in env
        and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")
    )


def slurm_plugins() -> list:
    """``Trainer(plugins=...)``: Lightning's SLURM environment under srun, else [].

    Goes with :func:`slurm_callbacks`, which takes the requeue signal over from Lightning's handler.
    """
    if not under_srun():
        return []
    ranks = SlurmRanks.from_env(os.environ)
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    print(
        f"[dskd slurm] job {os.environ['SLURM_JOB_ID']} restart {restart}: "
        f"rank {ranks.global_rank}/{ranks.world_size} (node {ranks.node_rank}, local {ranks.local_rank}), "
        f"main {ranks.main_address}:{ranks.main_port}",
        flush=True,
    )
    return [SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR1)]


def slurm_callbacks(checkpoint_dir: str | Path) -> list:
    """``Trainer(callbacks=...)`` additions under srun: [:class:`SlurmRequeue`], else []."""
    return [SlurmRequeue(checkpoint_dir)] if under_srun() else []


class SlurmRequeue(pl.Callback):
    """On SIGUSR1: checkpoint with every process at the same step, requeue the job, wait to be stopped.

    Lightning's own handler saves the checkpoint inside the signal handler, wherever each process
    happens to be. When saving needs a collective (the data module gathers every rank's position)
    while another process is blocked in the gradient all-reduce, the processes deadlock (seen with
    2 CPU processes on a real cluster). Here the handler only notes the signal; after each training
    batch the processes agree whether any of them got it, and if so all save ``hpc_ckpt_N.ckpt`` in
    ``checkpoint_dir`` (like Lightning's ``ModelCheckpoint``, at the end of a batch). Once that batch's
    metrics are logged (at the next batch start, or the end of training) the loggers are flushed, rank 0
    runs ``scontrol requeue`` and all processes wait for SLURM to stop them (SIGTERM, then SIGKILL after
    KillWait). SIGTERM is ignored from the requeue on: Lightning's handler runs a collective and stops
    the fit, which raced with the end of the batch when the requeue came earlier (a step missing from
    ``metrics.csv``, docs/slurm.md). If the requeue fails, training goes on.
    """

    def __init__(self, checkpoint_dir: str | Path, signum: signal.Signals = signal.SIGUSR1) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.signum = signum
        self._received = False
        self._saved = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Replaces Lightning's handler (registered just before); teardown restores the original one.
        signal.signal(self.signum, self._note)

    def _note(self, signum: int, frame: object) -> None:
        self._received = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        if not trainer.strategy.reduce_boolean_decision(self._received, all=False):
            return
        self._received = False
        path = next_hpc_path(self.checkpoint_dir)
        save_for_resume(trainer, path)  # the requeued job resumes it
        rank_zero_info(f"[dskd slurm] {self.signum.name}: saved {path} at step {trainer.global_step}")
        self._saved = True

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if self._saved:
            self._requeue_and_wait(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._saved:
            self._requeue_and_wait(trainer)

    def _requeue_and_wait(self, trainer: pl.Trainer) -> None:
        self._saved = False
        for logger in trainer.loggers:  # the metrics up to the checkpoint reach disk before SLURM stops us
            logger.save()
        lightnings = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not trainer.strategy.broadcast(requeue_job() if trainer.is_global_zero else False, src=0):
            signal.signal(signal.SIGTERM, lightnings)
            rank_zero_warn("[dskd slurm] the job could not be requeued; training goes on.")
            return
        rank_zero_info("[dskd slurm] job requeued; waiting for SLURM to stop this run.")
        while True:
            time.sleep(1)


def requeue_job(env: Mapping[str, str] | None = None) -> bool:
    """``scontrol requeue`` this job (array task aware); False, with the reason printed, if it fails."""
    env = os.environ if env is None else env
    job = env["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in env:
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    try:
        out = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"[dskd slurm] scontrol requeue {job} failed: {e}", flush=True)
        return False
    if out.returncode != 0:
        print(f"[dskd slurm] scontrol requeue {job} failed: {out.stderr.strip()}", flush=True)
        return False
    print(f"[dskd slurm] requeued job {job}", flush=True)
    return True


def _hpc_checkpoints(folder: str | Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in Path(folder).glob("hpc_ckpt_*.ckpt"):
        if m := _HPC.fullmatch(path.name):
            found[int(m.group(1))] = path
    return found


def next_hpc_path(folder: str | Path) -> Path:
    """``folder/hpc_ckpt_N.ckpt`` with N one more than the newest there (Lightning's naming)."""
    return Path(folder) / f"hpc_ckpt_{max(_hpc_checkpoints(folder), default=0) + 1}.ckpt"


def resume_path(checkpoint_dir: str | Path, last: str | None) -> str | None:
    """What ``trainer.resume=auto`` continues from: the newest of ``last`` and the run's ``hpc_ckpt_N.ckpt``.

    :class:`SlurmRequeue` saves ``hpc_ckpt_N.ckpt`` (N = 1, 2, ... per requeue) in the checkpoint
    folder, not in ``trainer.default_root_dir``, where Lightning would restore the newest one by itself
    whenever ``fit``, ``validate`` or ``test`` get ``ckpt_path=None`` under SLURM; the training code
    resumes explicitly from what this returns.
    """
    found = _hpc_checkpoints(checkpoint_dir)
    if not found:
        return last
    hpc = found[max(found)]
    if last is not None and Path(last).stat().st_mtime >= hpc.stat().st_mtime:
        return last
    return str(hpc)
