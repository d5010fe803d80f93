"""Teacher signals: each source's KD term against the reference losses of dskd.losses, one step for
all of them, and a new source as one class."""

from __future__ import annotations

import pytest
import torch

from dskd.core.io import read_json
from dskd.losses.kd import kd_loss, kd_mean, position_mask
from dskd.losses.topk import teacher_topk, topk_kd_loss
from dskd.models.loading import load_causal_lm, load_tokenizer
from dskd.models.student import build_student
from dskd.senses import SenseDictionary
from dskd.teacher_cache.store import META_FILE, CachedTeacher
from dskd.testing.fixtures import random_batch, write_batch_cache
from dskd.training.module import DistillationModule, DistillationParts
from dskd.training.teacher_signals import (
    CachedSamples,
    CachedTopK,
    OnlineTeacher,
    Signals,
    TeacherReading,
    TeacherSignal,
)
from tests.sections import settings_of

from .tinyrun import VOCAB, tiny_config

SEQ = 12


def _setup(tmp, teacher_dir, kd_format: str, over: dict | None = None):
    """(config, teacher, student, senses, batch, signal) with a cache of ``batch`` in ``kd_format``."""
    over = {
        "cache.dir": str(tmp / f"cache-{kd_format}"),
        "cache.kd_format": kd_format,
        "cache.samples": 64,
        "cache.top_k": 8,
        "cache.hidden_positions": "all",
        "data.seq_len": SEQ,
        **(over or {}),
    }
    cfg = tiny_config(tmp, teacher_dir, "dskd", over)
    teacher = load_causal_lm(teacher_dir, dtype="float32")
    batch = random_batch(torch.Generator().manual_seed(0), 2, SEQ, VOCAB, positions=3, neighbours=2)
    batch["attention_mask"][1, 9:] = 0  # some padding
    write_batch_cache(cfg.cache.dir, cfg, load_tokenizer(str(teacher_dir)), teacher, [batch], "float32")
    cache = CachedTeacher(cfg.cache.dir, read_json(f"{cfg.cache.dir}/{META_FILE}"), cfg.loss.kd.tau)
    signal = CachedSamples(cache, cfg.loss) if kd_format == "sampled" else CachedTopK(cache, cfg.loss)
    student = build_student(cfg.student, teacher)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from the teacher it copies, so that KD is far from 0
        for p in student.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return cfg, teacher, student, SenseDictionary.load(str(tmp / "senses")), batch, signal


def _student_logits(student, batch) -> torch.Tensor:
    return student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _teacher_logits(teacher, batch) -> torch.Tensor:
    with torch.no_grad():
        return teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_online_kd_is_kd_loss_of_the_teachers_logits(run_tmp, teacher_dir):
    cfg, teacher, student, _, batch, _ = _setup(run_tmp, teacher_dir, "topk")
    signal = OnlineTeacher(teacher, cfg.loss, cfg.teacher.dtype)
    mask = position_mask(batch["labels"], batch["attention_mask"])
    logits_s, logits_t = _student_logits(student, batch), _teacher_logits(teacher, batch)
    got = signal.kd(signal.read(batch), logits_s, mask)
    torch.testing.assert_close(got.value, kd_loss(logits_s, logits_t, mask, kd=cfg.loss.kd))
    assert torch.equal(got.teacher_top1, logits_t.argmax(-1))


@pytest.mark.parametrize("k", [8, VOCAB])
def test_cached_top_k_kd_is_topk_kd_loss_of_the_teachers_logits(run_tmp, teacher_dir, k):
    cfg, teacher, student, _, batch, signal = _setup(run_tmp, teacher_dir, "topk", {"cache.top_k": k})
    mask = position_mask(batch["labels"], batch["attention_mask"])
    logits_s, logits_t = _student_logits(student, batch), _teacher_logits(teacher, batch)
    got = signal.kd(signal.read(batch), logits_s, mask)
    want = topk_kd_loss(logits_s, teacher_topk(logits_t, k, cfg.loss.kd.tau), mask, kd=cfg.loss.kd)
    torch.testing.assert_close(got.value, want, rtol=1e-3, atol=1e-4)  # log-probabilities stored in float16
    if k == VOCAB:  # no tail: the exact KD
        torch.testing.assert_close(
            got.value, kd_loss(logits_s, logits_t, mask, kd=cfg.loss.kd), atol=1e-5, rtol=0
        )
    assert torch.equal(got.teacher_top1, logits_t.argmax(-1))


def test_cached_samples_kd_is_the_estimate_from_the_drawn_tokens(run_tmp, teacher_dir):
    cfg, teacher, student, _, batch, signal = _setup(run_tmp, teacher_dir, "sampled")
    kd = cfg.loss.kd
    mask = position_mask(batch["labels"], batch["attention_mask"])
    logits_s, logits_t = _student_logits(student, batch), _teacher_logits(teacher, batch)
    reading = signal.read(batch)
    got = signal.kd(reading, logits_s, mask)
    samples = reading.distribution
    p_t = torch.softmax(logits_t / kd.tau, -1)
    torch.testing.assert_close(samples.entropy, -(p_t * p_t.log()).sum(-1), rtol=1e-5, atol=1e-5)
    assert (samples.counts.sum(-1) == 64).all()
    log_q = torch.log_softmax(logits_s / kd.tau, -1).gather(-1, samples.ids)  # by hand, slot by slot
    per_pos = -samples.entropy - (samples.counts / 64 * log_q).sum(-1)
    torch.testing.assert_close(got.value, kd_mean(per_pos, mask, kd=kd))
    assert torch.equal(got.teacher_top1, logits_t.argmax(-1))
    # an estimate of the exact KD (64 draws over 96 tokens, ~15 positions)
    assert got.value.item() == pytest.approx(kd_loss(logits_s, logits_t, mask, kd=kd).item(), rel=0.1)


class _Spy(TeacherSignal):
    """Records which methods the module calls on the signal it wraps."""

    def __init__(self, inner: TeacherSignal, calls: list[str]) -> None:
        super().__init__(inner.loss)
        self.inner, self.calls = inner, calls

    def __getattribute__(self, name: str):
        if name in ("to", "read", "kd", "sense_states", "ce_and_kd", "validation_sums"):
            object.__getattribute__(self, "calls").append(name)
            return getattr(object.__getattribute__(self, "inner"), name)
        return object.__getattribute__(self, name)


@pytest.mark.parametrize("source", ["online", "topk", "sampled"])
def test_the_step_reads_every_source_through_the_same_calls(run_tmp, teacher_dir, source):
    cfg, teacher, student, senses, batch, cached = _setup(
        run_tmp, teacher_dir, "sampled" if source == "sampled" else "topk"
    )
    signal = OnlineTeacher(teacher, cfg.loss, cfg.teacher.dtype) if source == "online" else cached
    module = DistillationModule(settings_of(cfg), DistillationParts(student, teacher, senses))
    calls: list[str] = []
    module.signals = Signals(_Spy(signal, calls), None)
    loss, parts, _ = module.losses(batch)
    loss.backward()
    assert calls == ["read", "ce_and_kd", "sense_states"]
    assert all(torch.isfinite(v) for v in parts.values()) and parts["kd"] > 0 and parts["sense"] > 0


class _Halved(OnlineTeacher):
    """A new source in one class: the online teacher's KD at half weight."""

    def kd(self, reading: TeacherReading, student_logits: torch.Tensor, mask: torch.Tensor):
        term = super().kd(reading, student_logits, mask)
        return term._replace(value=term.value / 2)


def test_a_new_source_is_one_class(run_tmp, teacher_dir):
    cfg, teacher, student, senses, batch, _ = _setup(run_tmp, teacher_dir, "topk")
    module = DistillationModule(settings_of(cfg), DistillationParts(student, teacher, senses))
    _, want, _ = module.losses(batch)
    halved = _Halved(teacher, cfg.loss, cfg.teacher.dtype)
    module.signals = Signals(halved, halved)
    _, got, _ = module.losses(batch)
    torch.testing.assert_close(got["kd"], want["kd"] / 2)
    assert got["ce"] == want["ce"] and got["sense"] == want["sense"]
