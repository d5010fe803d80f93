"""Training faults end to end: crafted and damaged checkpoints, empty data, a resume under another
config, two runs in one folder, Ctrl-C. Each ends in a one-line error or a correct resume."""

from __future__ import annotations

import logging
import os
import signal

import lightning.pytorch as pl
import pytest
import torch

from dskd.core.errors import ConfigError, DSKDError, TrainingInterrupted
from dskd.models.export import export_checkpoint
from dskd.training.checkpoints import CheckpointError, read_checkpoint
from dskd.training.run import train
from dskd.training.runlock import RunLocked

from .test_checkpoints import crafted_checkpoint
from .test_runlock import hold_lock
from .tinyrun import metrics_rows, random_batches, tiny_config, train_losses


def test_a_crafted_checkpoint_is_refused_by_export_and_resume(run_tmp, teacher_dir, capsys):
    from dskd.cli import main

    marker = run_tmp / "pwned"
    evil = crafted_checkpoint(run_tmp / "evil.ckpt", marker)
    assert main(["export", str(evil), str(run_tmp / "out")]) == 2
    assert "Refusing to load" in capsys.readouterr().err
    cfg = tiny_config(run_tmp, teacher_dir, "kd", {"trainer.resume": str(evil)})
    with pytest.raises(CheckpointError, match="Refusing to load"):
        train(cfg, datamodule=random_batches(n=2), export=False)
    assert not marker.exists() and not (run_tmp / "out").exists()


@pytest.mark.timeout(180)
def test_an_empty_corpus_stops_with_a_one_line_error(run_tmp, teacher_dir):
    text = run_tmp / "corpus.txt"
    text.write_text("\n\n   \n\t\n")
    data = {"data.train": [{"kind": "text", "path": str(text)}], "data.seq_len": 8, "data.batch_size": 2}
    cfg = tiny_config(run_tmp, teacher_dir, "kd", data)
    with pytest.raises(DSKDError, match="has no batch: the training data holds no usable document") as info:
        train(cfg, export=False)  # the real DSKD data module; before the guard this looped forever
    assert "\n" not in str(info.value) and "data.val_fraction" in str(info.value)


def test_holding_out_every_document_is_refused_when_the_config_loads(run_tmp, teacher_dir):
    with pytest.raises(ConfigError, match=r"'data.val_fraction' .* is 1.0, outside its valid range") as info:
        tiny_config(run_tmp, teacher_dir, "kd", {"data.val_fraction": 1.0})
    assert "\n" not in str(info.value)


def test_a_resume_under_another_experiment_is_refused_and_extending_a_run_is_not(run_tmp, teacher_dir):
    run = run_tmp / "runs" / "same" / "seed-0"
    dskd_run = tiny_config(run_tmp, teacher_dir, "dskd", {"name": "same", "trainer.max_steps": 2})
    train(dskd_run, datamodule=random_batches(n=4), export=False)
    config, rows = (run / "config.yaml").read_text(), metrics_rows(run)

    other = tiny_config(run_tmp, teacher_dir, "kd", {"name": "same", "trainer.max_steps": 2, "optim.lr": 0.5})
    with pytest.raises(ConfigError) as info:
        train(other, datamodule=random_batches(n=4), export=False)
    message = str(info.value)
    assert "method: 'dskd' -> 'kd'" in message and "optim.lr: 0.001 -> 0.5" in message
    assert "trainer.resume=never" in message and "\n" not in message
    assert (run / "config.yaml").read_text() == config and metrics_rows(run) == rows  # nothing rewritten

    longer = tiny_config(run_tmp, teacher_dir, "dskd", {"name": "same", "trainer.max_steps": 4})
    assert train(longer, datamodule=random_batches(n=4), export=False)["global_step"] == 4
    assert [int(r["step"]) for r in metrics_rows(run) if r.get("train/loss")] == [1, 2, 3, 4]

    over = {"name": "same", "trainer.max_steps": 2, "optim.lr": 0.5, "trainer.resume": "never"}
    again = tiny_config(run_tmp, teacher_dir, "kd", over)
    assert train(again, datamodule=random_batches(n=4), export=False)["global_step"] == 2
    rows = [r for r in metrics_rows(run) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [1, 2] and not any(r.get("train/sense") for r in rows)


def test_resume_falls_back_past_a_damaged_last_ckpt_and_removes_staging(run_tmp, teacher_dir, caplog):
    over = {"trainer.max_steps": 3, "trainer.checkpoint_every_n_steps": 2}
    train(tiny_config(run_tmp, teacher_dir, "kd", over), datamodule=random_batches(n=6), export=False)
    ckpts = run_tmp / "runs" / "tiny-kd" / "seed-0" / "checkpoints"
    assert read_checkpoint(ckpts / "last.prev.ckpt")["global_step"] == 2
    (ckpts / "last.ckpt").write_bytes(b"")  # what a kill during Lightning's own save left
    staging = ckpts / ".last.ckpt.k1ll3d.tmp"
    staging.write_bytes(b"\0" * 1000)

    longer = tiny_config(run_tmp, teacher_dir, "kd", {**over, "trainer.max_steps": 5})
    with caplog.at_level(logging.INFO, logger="dskd"):
        out = train(longer, datamodule=random_batches(n=6), export=False)
    assert out["global_step"] == 5
    notes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("note:")]
    assert any("last.ckpt is not a readable PyTorch" in n and "last.prev.ckpt" in n for n in notes), notes
    assert any("removed" in n and staging.name in n for n in notes), notes
    assert not staging.exists() and (ckpts / "last.ckpt.unusable").exists()
    rows = [
        int(r["step"]) for r in metrics_rows(run_tmp / "runs" / "tiny-kd" / "seed-0") if r.get("train/loss")
    ]
    assert rows == [1, 2, 3, 4, 5]  # step 3 ran twice, logged once


def test_a_second_run_in_the_same_folder_is_refused(run_tmp, teacher_dir):
    run = run_tmp / "runs" / "tiny-kd" / "seed-0"
    holder = hold_lock(run)
    try:
        with pytest.raises(RunLocked, match=rf"{run} is in use by process {holder.pid} "):
            train(tiny_config(run_tmp, teacher_dir, "kd"), datamodule=random_batches(n=2), export=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not (run / "config.yaml").exists() and not (run / "metrics.csv").exists()


def test_ctrl_c_saves_the_step_reached_exits_130_and_resume_continues(run_tmp, teacher_dir):
    class CtrlC(pl.Callback):  # a real SIGINT to this process, as Ctrl-C in a terminal sends it
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 5:
                os.kill(os.getpid(), signal.SIGINT)

    over = {"trainer.max_steps": 8, "trainer.checkpoint_every_n_steps": 4}
    cfg = tiny_config(run_tmp, teacher_dir, "kd", over)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="Stopped by SIGINT at step 6") as info:
        train(cfg, datamodule=random_batches(n=5), callbacks=[CtrlC()], export=False)
    assert info.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    run = run_tmp / "runs" / "tiny-kd" / "seed-0"
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 6
    assert train(cfg, datamodule=random_batches(n=5), export=False)["global_step"] == 8
    assert sorted(train_losses(run)) == list(range(1, 9))
    assert len([r for r in metrics_rows(run) if r.get("train/loss")]) == 8


class Overflow(pl.Callback):
    """Scale the student's top MLP by 1e20 after step ``step`` (None: when training ends): every weight
    stays finite, but the activations overflow and the logits are NaN (what optim.lr=1e6 did to the
    smoke preset's student, its weights finite up to 9e8)."""

    def __init__(self, step: int | None = None) -> None:
        self.step = step

    def _scale(self, pl_module) -> None:
        with torch.no_grad():
            mlp = pl_module.student.get_decoder().layers[-1].mlp
            mlp.gate_proj.weight.mul_(1e20)
            mlp.up_proj.weight.mul_(1e20)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self._scale(pl_module)

    def on_train_end(self, trainer, pl_module):
        if self.step is None:
            self._scale(pl_module)


def test_a_diverged_skip_run_exits_non_zero_naming_the_step_and_policy_and_exports_nothing(
    run_tmp, teacher_dir
):
    cfg = tiny_config(run_tmp, teacher_dir, "kd", {"trainer.nan_policy": "skip", "trainer.max_steps": 5})
    with pytest.raises(DSKDError) as info:  # before: exit 0 and an export whose logits are NaN
        train(cfg, datamodule=random_batches(n=5), callbacks=[Overflow(step=3)])
    message = str(info.value)
    assert message.startswith("Step 4, the last step of the run, was skipped for a non-finite loss ")
    assert "(trainer.nan_policy=skip)" in message and "the student is not exported" in message
    run = run_tmp / "runs" / "tiny-kd" / "seed-0"
    assert "\n" not in message and not (run / "export").exists() and not (run / "summary.json").exists()
    assert [r["train/skipped"] for r in metrics_rows(run) if r.get("train/skipped")] == ["0.0"] * 3 + [
        "1.0"
    ] * 2


def test_a_non_finite_end_of_run_validation_fails_and_export_refuses_the_checkpoint(run_tmp, teacher_dir):
    cfg = tiny_config(run_tmp, teacher_dir, "kd", {"trainer.max_steps": 3})
    with pytest.raises(
        DSKDError, match=r"^The end-of-run validation after step 2 is not finite \(val/ce=nan"
    ):
        train(cfg, datamodule=random_batches(n=3), callbacks=[Overflow()])
    ckpt = run_tmp / "runs" / "tiny-kd" / "seed-0" / "checkpoints" / "last.ckpt"
    assert all(torch.isfinite(v).all() for v in read_checkpoint(ckpt)["state_dict"].values())
    with pytest.raises(DSKDError, match=r"\(step 3\) computes non-finite logits on a probe input"):
        export_checkpoint(ckpt, run_tmp / "out")
    assert not (run_tmp / "out").exists()
