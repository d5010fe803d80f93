"""What must not change a number: resuming through the real data module, the validation schedule
across a resume, gradient accumulation and chunked KD inside the module; and a pinned tiny run."""

from __future__ import annotations

import copy
import csv

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from dskd.core.batch import IGNORE_INDEX
from dskd.core.trusted_load import read_checkpoint
from dskd.losses.kd import position_mask
from dskd.models.loading import load_causal_lm
from dskd.models.student import build_projection, build_student
from dskd.senses import SenseDictionary
from dskd.testing.fixtures import random_batch
from dskd.training.module import DistillationModule, DistillationParts
from dskd.training.run import run_dir, train
from dskd.training.teacher_signals import TeacherSignal
from tests.sections import settings_of

from .tinyrun import (
    VOCAB,
    corpus_config,
    make_senses,
    random_batches,
    real_datamodule,
    tiny_config,
    write_corpus,
)


def _rows(cfg) -> list[dict[str, str]]:
    with open(run_dir(cfg.runs_dir, cfg.name, cfg.seed) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _by_step(cfg, key: str) -> dict[int, float]:
    return {int(r["step"]): float(r[key]) for r in _rows(cfg) if r.get(key)}


class _RecordBatches(pl.Callback):
    """The batch each optimizer step trained on, by global step (a later run overwrites earlier ones)."""

    def __init__(self) -> None:
        self.seen: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen[trainer.global_step] = {k: v.clone() for k, v in batch.items()}


class _Crash(pl.Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


# ---- resume and the validation schedule through the real DSKDDataModule ---------------------------

STEPS, CHECKPOINT_EVERY, VAL_EVERY, CRASH_AT = 8, 4, 3, 5
"""Two loader workers deal 3 training batches per epoch: the crash comes in the second epoch, right
after the checkpoint of step 4, one batch into the epoch (the next batch is the second worker's)."""


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, teacher_dir):
    """An uninterrupted DSKD run and one crashed before step 5 and resumed from step 4, both on a
    text corpus through the real streaming data module (2 workers), with validation every 3 steps."""
    tmp = tmp_path_factory.mktemp("resume")
    make_senses(tmp / "senses")
    corpus = write_corpus(tmp / "corpus.txt", docs=12)
    over = {
        "senses.output_dir": str(tmp / "senses"),
        "trainer.max_steps": STEPS,
        "trainer.checkpoint_every_n_steps": CHECKPOINT_EVERY,
        "trainer.val_check_interval": VAL_EVERY,
        "trainer.limit_val_batches": 2,
        "data.num_workers": 2,
    }
    full, broken = (
        corpus_config(tmp / name, teacher_dir, corpus, "dskd", over) for name in ("full", "broken")
    )
    seen_full, seen_broken = _RecordBatches(), _RecordBatches()
    train(full, datamodule=real_datamodule(full), callbacks=[seen_full], export=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(
            broken,
            datamodule=real_datamodule(broken),
            callbacks=[seen_broken, _Crash(CRASH_AT)],
            export=False,
        )
    checkpoint = read_checkpoint(
        run_dir(broken.runs_dir, broken.name, broken.seed) / "checkpoints" / "last.ckpt"
    )
    summary = train(broken, datamodule=real_datamodule(broken), callbacks=[seen_broken], export=False)
    return {
        "full": full,
        "broken": broken,
        "seen": (seen_full.seen, seen_broken.seen),
        "checkpoint": checkpoint,
        "summary": summary,
    }


def test_resume_through_the_real_data_module_repeats_every_batch_and_loss(resumed):
    checkpoint = resumed["checkpoint"]
    assert checkpoint["global_step"] == 4 and checkpoint["epoch"] == 1  # mid second epoch
    assert checkpoint["DSKDDataModule"]["rotation"] == {0: 1}  # the resumed loader starts at worker 1
    assert resumed["summary"]["global_step"] == STEPS
    full, again = resumed["seen"]
    assert sorted(full) == sorted(again) == list(range(STEPS))
    for step in full:
        assert full[step].keys() == again[step].keys()
        for key in full[step]:
            assert torch.equal(full[step][key], again[step][key]), (step, key)
    a, b = _by_step(resumed["full"], "train/loss"), _by_step(resumed["broken"], "train/loss")
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))  # logged at the steps done
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step


def test_validation_runs_at_the_same_steps_across_a_resume(resumed):
    a, b = _by_step(resumed["full"], "val/loss"), _by_step(resumed["broken"], "val/loss")
    during_fit = [VAL_EVERY * k for k in range(1, STEPS // VAL_EVERY + 1)]  # logged at the steps done
    assert sorted(a) == sorted({*during_fit, STEPS})  # and train()'s final validation
    assert sorted(b) == sorted(a)
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step


def _extended(tmp, teacher_dir, steps: int, then: int | None, docs: int = 16) -> tuple[dict, dict, int]:
    """(batch by step, train/loss by step, batches of the data's first epoch) of a run of ``steps``
    steps on a corpus of ``docs`` documents, extended to ``then`` steps by a resume with a larger
    trainer.max_steps (None: not extended)."""
    tmp.mkdir()
    corpus = write_corpus(tmp / "corpus.txt", docs=docs)
    # the cosine schedule spans trainer.max_steps, so a 4-step run's lr differs from an 8-step run's: at
    # an lr that leaves the weights as they are, equal losses mean the same batches read the same teacher
    over = {
        "senses.output_dir": str(tmp / "senses"),
        "trainer.checkpoint_every_n_steps": 100,
        "optim.lr": 1e-12,
    }
    make_senses(tmp / "senses")
    seen = _RecordBatches()
    cfg = corpus_config(tmp, teacher_dir, corpus, "dskd", {**over, "trainer.max_steps": steps})
    train(cfg, datamodule=real_datamodule(cfg), callbacks=[seen], export=False)
    if then is not None:
        cfg = corpus_config(tmp, teacher_dir, corpus, "dskd", {**over, "trainer.max_steps": then})
        summary = train(cfg, datamodule=real_datamodule(cfg), callbacks=[seen], export=False)
        assert summary["global_step"] == then
    dm = real_datamodule(cfg)
    dm.setup("fit")
    return seen.seen, _by_step(cfg, "train/loss"), dm.batches_per_epoch(1, 0)


def test_a_finished_run_extended_by_max_steps_continues_where_its_data_stopped(run_tmp, teacher_dir):
    """4 steps, then extended to 8: the batches and losses of 8 uninterrupted steps (the extension
    finishes the data's first epoch and goes on into the next)."""
    want_batches, want_losses, per_epoch = _extended(run_tmp / "full", teacher_dir, 8, None)
    got_batches, got_losses, _ = _extended(run_tmp / "extended", teacher_dir, 4, 8)
    assert 4 < per_epoch < 8
    assert sorted(want_batches) == sorted(got_batches) == list(range(8))
    for step in range(8):
        for key in want_batches[step]:
            assert torch.equal(want_batches[step][key], got_batches[step][key]), (step, key)
        assert got_losses[step + 1] == pytest.approx(want_losses[step + 1], abs=1e-6), step


def test_a_run_stopped_at_an_epochs_last_batch_extended_by_max_steps_goes_on_into_the_next_epoch(
    run_tmp, teacher_dir
):
    """The data's first epoch holds exactly 4 batches: 4 steps, then extended to 6, trains the first 2
    batches of the second epoch at steps 4 and 5, as 6 uninterrupted steps do (Lightning restored the
    finished epoch as one to run again without a batch: the data skipped an epoch and the extension
    logged its steps one on)."""
    want_batches, want_losses, per_epoch = _extended(run_tmp / "full", teacher_dir, 6, None, docs=11)
    got_batches, got_losses, _ = _extended(run_tmp / "extended", teacher_dir, 4, 6, docs=11)
    assert per_epoch == 4
    assert sorted(want_batches) == sorted(got_batches) == list(range(6))
    assert sorted(want_losses) == sorted(got_losses) == list(range(1, 7))  # a row at the steps done
    for step in range(6):
        for key in want_batches[step]:
            assert torch.equal(want_batches[step][key], got_batches[step][key]), (step, key)
        assert got_losses[step + 1] == pytest.approx(want_losses[step + 1], abs=1e-6), step


def test_a_sized_data_module_stopped_at_an_epochs_end_extends_into_the_next_epoch(run_tmp, teacher_dir):
    """A data module of 4 batches an epoch (wrapped by ResumableLoader): 4 steps, then 6, trains the
    batches and losses of 6 uninterrupted steps (the resume stopped with "Training epoch 2 has no
    batch": the finished epoch's position was applied to the next)."""
    runs = {}
    for name, plan in (("full", [6]), ("extended", [4, 6])):
        seen = _RecordBatches()
        for steps in plan:
            over = {
                "senses.output_dir": str(run_tmp / "senses"),
                "trainer.max_steps": steps,
                "trainer.checkpoint_every_n_steps": 100,
                "optim.lr": 1e-12,
            }
            cfg = tiny_config(run_tmp / name, teacher_dir, "dskd", over)
            assert train(cfg, random_batches(n=4), [seen], export=False)["global_step"] == steps
        runs[name] = seen.seen, _by_step(cfg, "train/loss")
    (want_batches, want_losses), (got_batches, got_losses) = runs["full"], runs["extended"]
    assert sorted(got_batches) == list(range(6)) and sorted(got_losses) == list(range(1, 7))
    for step in range(6):
        assert torch.equal(got_batches[step]["input_ids"], want_batches[step]["input_ids"]), step
        assert got_losses[step + 1] == pytest.approx(want_losses[step + 1], abs=1e-6), step


# ---- gradient accumulation ------------------------------------------------------------------------


class _FixedBatches(pl.LightningDataModule):
    """These training batches, in this order, every epoch."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.batches = batches

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None)


class _FirstGradients(pl.Callback):
    """The gradients (summed over micro-batches, before clipping) of the first optimizer step."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.grads:
            self.grads = {n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None}


def _first_gradients(tmp, teacher_dir, batches, accumulate: int) -> dict[str, torch.Tensor]:
    over = {
        "senses.output_dir": str(tmp.parent / "senses"),
        "trainer.max_steps": 1,
        "trainer.accumulate_grad_batches": accumulate,
    }
    record = _FirstGradients()
    train(tiny_config(tmp, teacher_dir, "dskd", over), _FixedBatches(batches), [record], export=False)
    return record.grads


def test_accumulated_gradients_are_the_mean_of_the_micro_batch_gradients(run_tmp, teacher_dir):
    """Lightning divides each micro-batch loss by ``accumulate_grad_batches``: the step's gradient is
    the mean of the micro-batches' gradients. Each loss is a mean over its own batch (CE and KD over
    valid positions, the sense loss over sequences with terms), so this equals the gradient of the one
    batch that joins them exactly when every micro-batch holds as many valid positions and sequences
    with sense terms, as these do (same padding, every sequence with P2 terms)."""
    g = torch.Generator().manual_seed(3)
    first, second = (random_batch(g, batch=2, seq=16, vocab=VOCAB) for _ in range(2))
    joined = {k: torch.cat([first[k], second[k]]) for k in first}
    accumulated = _first_gradients(run_tmp / "acc", teacher_dir, [first, second], accumulate=2)
    alone = [
        _first_gradients(run_tmp / f"b{i}", teacher_dir, [b], accumulate=1)
        for i, b in enumerate([first, second])
    ]
    at_once = _first_gradients(run_tmp / "joined", teacher_dir, [joined], accumulate=1)
    assert accumulated.keys() == at_once.keys() and accumulated
    for name, grad in accumulated.items():
        torch.testing.assert_close(grad, (alone[0][name] + alone[1][name]) / 2, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grad, at_once[name], rtol=1e-5, atol=1e-7)


# ---- chunked KD inside the module -----------------------------------------------------------------


def test_chunked_kd_in_the_module_matches_full_logits(run_tmp, teacher_dir):
    teacher = load_causal_lm(teacher_dir, dtype="float32")
    senses = SenseDictionary.load(run_tmp / "senses")
    batch = random_batch(torch.Generator().manual_seed(4), batch=3, seq=16, vocab=VOCAB)
    results = []
    for chunk_size in (None, 5):  # 5 divides none of the per-batch position counts
        over = {"loss.kd.chunk_size": chunk_size, "loss.kd.divergence": "js", "student.projection": "linear"}
        cfg = tiny_config(run_tmp, teacher_dir, "dskd", over)
        torch.manual_seed(0)
        student = build_student(cfg.student, teacher)
        parts = DistillationParts(student, teacher, senses, build_projection(cfg.student, student, teacher))
        module = DistillationModule(settings_of(cfg), parts)
        loss, parts, _ = module.losses(copy.deepcopy(batch))
        loss.backward()
        grads = {n: p.grad for n, p in module.named_parameters() if p.requires_grad}
        results.append((loss.detach(), parts, grads))
    (full_loss, full_parts, full_grads), (chunked_loss, chunked_parts, chunked_grads) = results
    torch.testing.assert_close(chunked_loss, full_loss)
    for key in ("ce", "kd", "sense"):
        torch.testing.assert_close(chunked_parts[key], full_parts[key])
    assert full_grads.keys() == chunked_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(chunked_grads[name], full_grads[name], rtol=1e-5, atol=1e-7)


def test_validation_with_chunked_kd_matches_full_logits_and_never_builds_them(run_tmp, teacher_dir):
    """With loss.kd.chunk_size, validation sums CE, KD and top-1 agreement chunk by chunk: the same
    numbers as from the full logits, without either LM head module ever running on a whole batch; no
    forward keeps a key/value cache (use_cache=False)."""
    teacher = load_causal_lm(teacher_dir, dtype="float32")
    batch = random_batch(torch.Generator().manual_seed(5), batch=3, seq=16, vocab=VOCAB)
    batch["attention_mask"][0, 12:] = 0  # some padding
    cfg = tiny_config(run_tmp, teacher_dir, "kd", {"loss.kd.chunk_size": 5, "loss.kd.divergence": "js"})
    torch.manual_seed(0)
    parts = DistillationParts(build_student(cfg.student, teacher), teacher)
    module = DistillationModule(settings_of(cfg), parts)
    module._place_teacher = lambda: None  # no trainer: the teacher is already on the CPU
    heads, caches = [], []
    for model in (module.student, teacher):
        model.get_output_embeddings().register_forward_hook(lambda *a: heads.append(1))
        model.get_decoder().register_forward_pre_hook(
            lambda m, args, kwargs: caches.append(kwargs.get("use_cache")), with_kwargs=True
        )
    module.on_validation_epoch_start()
    with torch.no_grad():
        module.validation_step(copy.deepcopy(batch), 0)
        chunked = module._val_sums.clone()
        h_s = module.student.get_decoder()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).last_hidden_state
        reading = module.signals.data.read(batch)
    assert heads == [] and caches == [False] * 4
    mask = position_mask(batch["labels"], batch["attention_mask"])
    labels = batch["labels"].masked_fill(~mask, IGNORE_INDEX)
    with torch.no_grad():  # the full-logits sums every teacher signal shares (no chunking)
        full = TeacherSignal.validation_sums(
            module.signals.data, reading, h_s, module.student.get_output_embeddings(), labels, mask
        )
    assert heads and int(full[3]) == int(mask.sum()) and full[2] > 0
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)


# ---- a pinned tiny run ----------------------------------------------------------------------------

PINNED = [6.498300552368164, 6.443853378295898, 6.501500129699707, 6.584043979644775]
"""train/loss of the first 4 steps of the tiny DSKD run below (random teacher seed 0, word corpus)."""


def test_pinned_losses_of_four_tiny_steps(run_tmp, teacher_dir):
    corpus = write_corpus(run_tmp / "corpus.txt")
    over = {"senses.output_dir": str(run_tmp / "senses"), "trainer.max_steps": 4}
    cfg = corpus_config(run_tmp / "pinned", teacher_dir, corpus, "dskd", over)
    train(cfg, datamodule=real_datamodule(cfg), export=False)
    losses = _by_step(cfg, "train/loss")
    got = [losses[step] for step in range(1, 5)]
    assert got == pytest.approx(PINNED, rel=1e-4), (
        f"The losses of the pinned 4-step tiny run changed: got {got}, pinned {PINNED}. A change of "
        "numerics (loss, model, optimiser, data order or sampling) must be deliberate: if it is, re-pin "
        "by copying the new values into PINNED in tests/training/test_equivalence.py and say why in the "
        "commit message; if it is not, find what changed."
    )
