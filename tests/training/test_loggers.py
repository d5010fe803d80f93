"""W&B run identity and steps, read back from the real offline run files of tiny trainings."""

from __future__ import annotations

import csv
import json
import os
import signal

import lightning.pytorch as pl
import pytest

from dskd.core.errors import TrainingInterrupted
from dskd.tracking.offline import history, run_id, run_logs
from dskd.training.loggers import RUN_ID_FILE
from dskd.training.run import train

from .tinyrun import random_batches, tiny_config


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")


def _train_steps(log) -> list[int]:
    rows = [r for r in history(log) if "train/loss" in r]
    assert all(r["_step"] == r["trainer/global_step"] for r in rows)  # W&B's step is the trainer's
    return [r["trainer/global_step"] for r in rows]


def test_two_configs_in_one_folder_get_different_ids(run_tmp, teacher_dir, offline):
    over = {"logging.wandb": True, "trainer.max_steps": 1}
    train(tiny_config(run_tmp, teacher_dir, "kd", over), datamodule=random_batches(n=2), export=False)
    # another experiment in the same folder must start over (resuming it is refused)
    changed = tiny_config(run_tmp, teacher_dir, "kd", {**over, "optim.lr": 5e-4, "trainer.resume": "never"})
    train(changed, datamodule=random_batches(n=2), export=False)
    rdir = run_tmp / "runs" / "tiny-kd" / "seed-0"
    ids = [run_id(log) for log in run_logs(rdir)]
    assert len(ids) == 2 and ids[0] != ids[1]
    assert json.loads((rdir / RUN_ID_FILE).read_text())["id"] == ids[1]


def test_sigterm_and_resume_give_disjoint_continuous_segments(run_tmp, teacher_dir, offline):
    class Terminate(pl.Callback):  # a real SIGTERM, as a scheduler sends it
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg = tiny_config(run_tmp, teacher_dir, "kd", {"logging.wandb": True, "trainer.max_steps": 6})
    with pytest.raises(TrainingInterrupted):
        train(cfg, datamodule=random_batches(n=4), callbacks=[Terminate()], export=False)
    train(cfg, datamodule=random_batches(n=4), export=False)  # trainer.resume=auto
    first, second = run_logs(run_tmp / "runs" / "tiny-kd" / "seed-0")
    assert run_id(first) == run_id(second)
    assert _train_steps(first) == [1, 2, 3] and _train_steps(second) == [4, 5, 6]  # steps done, as [train]
    assert min(r["_step"] for r in history(second)) == 4  # nothing of the second segment below it


def test_metrics_csv_is_on_disk_during_the_run_at_each_logged_step(run_tmp, teacher_dir):
    path = run_tmp / "runs" / "tiny-kd" / "seed-0" / "metrics.csv"
    seen: dict[int, list[int]] = {}

    class Peek(pl.Callback):  # what a person tailing metrics.csv sees before each step
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            rows = list(csv.DictReader(path.read_text().splitlines())) if path.is_file() else []
            seen[trainer.global_step] = sorted({int(r["step"]) for r in rows})

    over = {"trainer.max_steps": 5, "trainer.log_every_n_steps": 2, "trainer.checkpoint_every_n_steps": 100}
    cfg = tiny_config(run_tmp, teacher_dir, "kd", over)
    train(cfg, datamodule=random_batches(n=6), callbacks=[Peek()], export=False)
    assert seen == {0: [], 1: [], 2: [2], 3: [2], 4: [2, 4]}
