"""The lr schedule: warm-up + cosine against transformers' implementation, and its length in an
epoch-based run on streamed data (the real data module counts the steps)."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import pytest
import torch

from dskd.core.errors import ConfigError
from dskd.training.config import OptimConfig
from dskd.training.run import run_dir, train
from dskd.training.schedule import total_optimizer_steps, warmup_cosine

from .tinyrun import corpus_config, real_datamodule, write_corpus


@pytest.mark.parametrize(("warmup", "total"), [(0, 10), (3, 10), (10, 37), (1, 1)])
def test_warmup_cosine_matches_transformers_and_stays_at_zero_after_the_end(warmup, total):
    from transformers import get_cosine_schedule_with_warmup

    ref = get_cosine_schedule_with_warmup(torch.optim.SGD([torch.zeros(1)], lr=1.0), warmup, total)
    ours = warmup_cosine(warmup, total)
    for step in range(total + 1):
        assert ours(step) == pytest.approx(ref.lr_lambdas[0](step), abs=1e-12), step
    assert [ours(total + k) for k in (1, 5, total)] == [0.0, 0.0, 0.0]  # no second rise


def _trainer(**kw) -> SimpleNamespace:
    """The attributes of a Lightning trainer that :func:`total_optimizer_steps` reads."""
    base = dict(max_steps=-1, max_epochs=2, world_size=1, accumulate_grad_batches=1, datamodule=None)
    return SimpleNamespace(**{**base, **kw, "estimated_stepping_batches": kw.get("estimated", math.inf)})


def _cfg(total_steps=None) -> OptimConfig:
    return OptimConfig(total_steps=total_steps)


def test_total_steps_come_from_max_steps_config_or_the_data():
    counted = SimpleNamespace(batches_per_epoch=lambda world, epoch: {1: 9, 2: 4}[world] + epoch)
    assert total_optimizer_steps(_trainer(max_steps=7), _cfg(100)) == 7
    assert total_optimizer_steps(_trainer(), _cfg(100)) == 100
    assert total_optimizer_steps(_trainer(datamodule=counted), _cfg()) == 19  # 9 + 10 batches
    assert total_optimizer_steps(_trainer(datamodule=counted, accumulate_grad_batches=2), _cfg()) == 10
    assert total_optimizer_steps(_trainer(datamodule=counted, world_size=2, max_epochs=3), _cfg()) == 15
    assert total_optimizer_steps(_trainer(estimated=40), _cfg()) == 40  # sized data: Lightning knows


def test_an_unknowable_total_is_refused_before_training():
    with pytest.raises(ConfigError, match="Set trainer.max_steps, or optim.total_steps"):
        total_optimizer_steps(_trainer(), _cfg())


def test_an_epoch_based_run_warms_up_and_decays_over_its_true_number_of_steps(run_tmp, teacher_dir, tmp_path):
    over = {"trainer.max_steps": -1, "trainer.max_epochs": 3, "trainer.log_every_n_steps": 1,
            "optim.warmup_ratio": 0.2, "optim.lr": 1e-3, "optim.scale_lr": False}  # fmt: skip
    cfg = corpus_config(run_tmp, teacher_dir, write_corpus(tmp_path / "c.txt", docs=40), "kd", over)
    summary = train(cfg, datamodule=real_datamodule(cfg), export=False)
    with open(run_dir(cfg.runs_dir, cfg.name, cfg.seed) / "metrics.csv", newline="") as f:
        # row s: the lr of the s-th step, index s - 1 of the schedule
        lr = {int(r["step"]) - 1: float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")}
    steps = summary["global_step"]
    assert steps >= 10 and sorted(lr) == list(range(steps))  # every step logged, epochs 1..3
    warmup = round(0.2 * steps)
    want = [1e-3 * warmup_cosine(warmup, steps)(s) for s in range(steps)]
    assert [lr[s] for s in range(steps)] == pytest.approx(want, rel=1e-6, abs=1e-12)
    assert lr[warmup] == pytest.approx(1e-3)  # the peak at the end of the warm-up
    assert all(lr[s] < lr[s + 1] for s in range(warmup))  # linear rise
    assert all(lr[s] > lr[s + 1] for s in range(warmup, steps - 1))  # cosine decay
    assert lr[steps - 1] < 0.02 * 1e-3  # about 0 at the end (one step before the schedule's end)
