"""Progress bar totals, plain progress lines and the throughput monitor on real Lightning runs."""

from __future__ import annotations

import csv
import io
import re

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from dskd.training.progress import ProgressLines, StepProgressBar, TokenThroughput, flops_per_token


class _Tiny(pl.LightningModule):
    """A linear model on dict batches with an attention mask (3 of 4 tokens are real)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch["input_ids"].float()).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        sample = {"input_ids": torch.ones(4, dtype=torch.long), "attention_mask": torch.tensor([1, 1, 1, 0])}
        return torch.utils.data.DataLoader([sample] * 6, batch_size=2)  # 3 batches of 2


def _fit(tmp_path, max_steps, callbacks, ckpt_path=None, enable_progress_bar=False):
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_Tiny(), ckpt_path=ckpt_path)
    return trainer


def test_bar_counts_the_steps_of_the_whole_run_also_after_a_resume(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    bar = StepProgressBar()
    _fit(tmp_path, 4, [bar, ckpt], enable_progress_bar=True)  # 4 steps over 2 epochs of 3 batches
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert (task.completed, task.total) == (4, 4) and "Training" in task.description
    bar = StepProgressBar()
    _fit(tmp_path, 7, [bar], ckpt_path=str(tmp_path / "last.ckpt"), enable_progress_bar=True)
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert (task.completed, task.total) == (7, 7)  # Lightning's bar would count this epoch's batches


def test_plain_lines_every_n_steps_with_loss_throughput_and_eta(tmp_path):
    out = io.StringIO()
    _fit(tmp_path, 5, [ProgressLines(2, out)])
    lines = out.getvalue().splitlines()
    assert [re.search(r"step (\d+)/5", line).group(1) for line in lines] == ["2", "4", "5"]
    assert all(
        re.search(r"\| loss [\d.]+ \| [\d,]+ tok/s \| elapsed 0:00:\d\d \| ETA 0:00:\d\d$", x) for x in lines
    )


def test_throughput_counts_real_tokens_and_flops(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=4,
        logger=CSVLogger(tmp_path, name="", version=""),
        log_every_n_steps=1,
        callbacks=[TokenThroughput(flops_per_token=10, window=2)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_Tiny())
    rows = [
        r
        for r in csv.DictReader((tmp_path / "metrics.csv").read_text().splitlines())
        if r.get("train/device/items_per_sec")
    ]
    assert rows and all(
        float(r["train/lengths"]) == 6 * (int(r["step"]) + 1) for r in rows
    )  # 6 real tokens a batch
    for r in rows:  # flops/s = 10 per token x 8 padded tokens per batch x batches/s
        assert float(r["train/device/flops_per_sec"]) == pytest.approx(
            80 * float(r["train/device/batches_per_sec"])
        )


def test_flops_per_token_counts_trainable_weights_three_times():
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(5, 1)  # 8 and 6 weights
    student.bias.requires_grad_(False)
    assert flops_per_token(student, teacher) == 6 * 6 + 2 * (2 + 6)
    assert flops_per_token(student, None) == 6 * 6 + 2 * 2


def test_flops_per_token_leaves_out_the_layers_of_a_shared_trunk(tiny_llama_config):
    from transformers import LlamaForCausalLM

    from dskd.models.student import truncate

    teacher = LlamaForCausalLM(tiny_llama_config(num_layers=4))
    teacher.requires_grad_(False)
    copies, shared = truncate(teacher, 3, 1), truncate(teacher, 3, 1, share=True)
    layer = sum(p.numel() for p in teacher.model.layers[0].parameters())
    assert flops_per_token(copies, teacher) - flops_per_token(shared, teacher) == 2 * 2 * layer
