"""Where student.share_trunk applies, and the one-line note where it cannot (the training stage)."""

from __future__ import annotations

import logging

import pytest
import torch

from dskd.models.config import StudentConfig
from dskd.models.trunk import shared_depth
from dskd.training.config import TrainerConfig
from dskd.training.run import load_models
from dskd.training.sharing import shares_trunk, trunk_off_reason
from tests.sections import models_of

from .tinyrun import tiny_config

F32, BF16 = torch.float32, torch.bfloat16


@pytest.mark.parametrize(
    ("student", "trainer", "teacher_dtype", "reason"),
    [
        (StudentConfig(), TrainerConfig(), F32, None),
        (StudentConfig(), TrainerConfig(strategy="ddp", precision="bf16-mixed"), BF16, None),
        (StudentConfig(), TrainerConfig(precision="16-mixed"), BF16, None),
        (StudentConfig(), TrainerConfig(precision="bf16-true"), BF16, None),
        (StudentConfig(kind="hf", model="m"), TrainerConfig(), F32, "student.kind=hf"),
        (StudentConfig(num_layers=4, trainable_top_layers=4), TrainerConfig(), F32, "all 4 layers"),
        (StudentConfig(), TrainerConfig(strategy="fsdp", precision="bf16-mixed"), BF16, None),
        (StudentConfig(), TrainerConfig(strategy="fsdp", precision="bf16-true"), F32, "teacher's float32"),
        (StudentConfig(), TrainerConfig(strategy="deepspeed_stage_2"), F32, "deepspeed_stage_2"),
        (StudentConfig(), TrainerConfig(strategy="deepspeed_stage_3"), F32, "deepspeed_stage_3"),
        (StudentConfig(), TrainerConfig(), BF16, "precision=32-true has no autocast"),
        (StudentConfig(), TrainerConfig(precision="bf16-true"), F32, "teacher's float32"),
    ],
)
def test_the_trunk_is_shared_where_it_can_be(student, trainer, teacher_dtype, reason):
    got = trunk_off_reason(student, trainer, teacher_dtype)
    assert got is None if reason is None else reason in got
    assert shares_trunk(student, trainer, teacher_dtype) is (reason is None)
    student.share_trunk = False
    assert not shares_trunk(student, trainer, teacher_dtype)


def _load(cfg):
    return load_models(models_of(cfg))[:4]


def test_the_training_stage_shares_where_it_can_and_says_in_one_line_where_it_cannot(
    tmp_path, teacher_dir, caplog
):
    caplog.set_level(logging.INFO, logger="dskd.training.run")
    _, teacher, student, _ = _load(tiny_config(tmp_path, teacher_dir))
    assert shared_depth(student, teacher) == 1 and not caplog.records
    assert all(p.dtype == torch.float32 for p in student.parameters())
    _, teacher, student, _ = _load(tiny_config(tmp_path, teacher_dir, over={"student.share_trunk": False}))
    assert shared_depth(student, teacher) == 0 and not caplog.records
    all_train = tiny_config(tmp_path, teacher_dir, over={"student.trainable_top_layers": 2})
    _, teacher, student, _ = _load(all_train)
    assert shared_depth(student, teacher) == 0
    notes = [r.getMessage() for r in caplog.records]
    assert notes == [
        "note: student.share_trunk off: all 2 layers of the student train: none is frozen to share."
    ]
    caplog.clear()  # cached without on-policy batches: no teacher runs, nothing to share, nothing to say
    _, teacher, student, _ = _load(tiny_config(tmp_path, teacher_dir, over={"teacher.mode": "cached"}))
    assert shared_depth(student, teacher) == 0 and not caplog.records
