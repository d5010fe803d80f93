"""Cached-teacher training: CE / sense / KD as online (sampled KD: an estimate), no teacher in the run."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from dskd.core.outputs import MARKER
from dskd.models.loading import load_causal_lm, load_tokenizer
from dskd.models.shared import StageProcess
from dskd.models.student import build_student
from dskd.senses import SenseDictionary
from dskd.teacher_cache.build import build, open_cache
from dskd.testing.fixtures import random_batch, random_senses, write_batch_cache
from dskd.training.module import DistillationModule, DistillationParts
from dskd.training.run import run_dir, train
from dskd.training.teacher_signals import CachedSamples, CachedTopK
from tests.sections import settings_of, spec_of
from tests.training.tinyrun import train_losses

from .conftest import HIDDEN, VOCAB


def _modules(cfg, hidden_dtype):
    """(online module, cached module) with identical students, the cache holding ``batches``."""
    tok = load_tokenizer(cfg.teacher.model)
    teacher = load_causal_lm(cfg.teacher.model, dtype="float32")
    senses = SenseDictionary.load(random_senses(cfg.senses.output_dir, VOCAB, HIDDEN))
    g = torch.Generator().manual_seed(0)
    batches = [random_batch(g, 2, cfg.data.seq_len, VOCAB, positions=4, neighbours=3) for _ in range(2)]
    cached_cfg = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, mode="cached"))
    write_batch_cache(cfg.cache.dir, cached_cfg, tok, teacher, batches, hidden_dtype)
    student = build_student(cfg.student, teacher)
    online = DistillationModule(settings_of(cfg), DistillationParts(student, teacher, senses))
    parts = DistillationParts(
        copy.deepcopy(student), None, senses, cache=open_cache(spec_of(cached_cfg), tok)
    )
    cached = DistillationModule(settings_of(cached_cfg), parts)
    return online, cached, batches


@pytest.mark.parametrize(("hidden_dtype", "tol"), [("float32", 0.0), ("float16", 2e-3)])
def test_cached_losses_equal_online_ones(make_cfg, hidden_dtype, tol):
    cfg = make_cfg(method="dskd", **{"cache.top_k": VOCAB})  # k = V: top-k KD is exact
    online, cached, batches = _modules(cfg, hidden_dtype)
    for batch in batches:
        _, want, _ = online.losses(batch)
        _, got, _ = cached.losses(batch)
        assert got["ce"].item() == want["ce"].item()  # CE uses the student only
        assert got["sense"].item() == pytest.approx(want["sense"].item(), rel=tol, abs=tol)
        # k = V: exact up to the float16 storage of the teacher's log-probabilities
        assert got["kd"].item() == pytest.approx(want["kd"].item(), abs=1e-5)


def test_top_k_kd_of_a_cached_step_is_a_lower_bound(make_cfg):
    online, cached, batches = _modules(make_cfg(method="dskd"), "float16")  # k = 8 of 64
    _, want, _ = online.losses(batches[0])
    _, got, _ = cached.losses(batches[0])
    assert 0 < got["kd"].item() <= want["kd"].item()  # forward KL on k + 1 categories: a lower bound


def test_sampled_kd_of_a_cached_step_estimates_the_online_kd(make_cfg):
    over = {"cache.kd_format": "sampled", "cache.samples": 255}
    online, cached, batches = _modules(make_cfg(method="dskd", **over), "float32")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the same perturbation of both students, so that KD is far from 0
        for a, b in zip(online.student.parameters(), cached.student.parameters(), strict=True):
            noise = torch.randn(a.shape, generator=g) * 0.3
            a.add_(noise)
            b.add_(noise)
    for batch in batches:
        _, want, _ = online.losses(batch)
        _, got, _ = cached.losses(batch)
        assert got["sense"].item() == want["sense"].item() and got["ce"].item() == want["ce"].item()
        # 255 draws per position over 64 tokens, mean of ~28 positions: within a few percent
        assert got["kd"].item() == pytest.approx(want["kd"].item(), rel=0.05)


class _NoTeacher(pl.Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        assert pl_module.teacher is None and isinstance(pl_module.signals.data, CachedTopK | CachedSamples)
        self.steps += 1


@pytest.mark.parametrize("targets", ["topk", "sampled"])
def test_cached_run_trains_without_a_teacher(make_cfg, targets):
    cfg = make_cfg(**{"cache.kd_format": targets})
    build(cfg, hidden_dtype="none", process=StageProcess(progress=False))
    check = _NoTeacher()
    cached_cfg = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, mode="cached"))
    out = train(cached_cfg, callbacks=[check], export=False)
    assert check.steps == out["global_step"] == 4
    assert all(torch.isfinite(torch.tensor(out["metrics"][k])) for k in ("val/kd", "val/ce", "train/kd"))


def test_cached_run_refuses_a_stale_cache(make_cfg):
    from dskd.core.errors import ArtifactMismatchError

    cfg = make_cfg()
    build(cfg, hidden_dtype="none", process=StageProcess(progress=False))
    stale = make_cfg(**{"teacher.mode": "cached", "data.seq_len": 12})
    with pytest.raises(ArtifactMismatchError, match="data_fingerprint"):
        train(stale, export=False)
    folder = run_dir(stale.runs_dir, stale.name, stale.seed)  # refused after its loggers wrote into it
    assert (folder / MARKER).is_file()  # still dskd's folder: the run's name is not blocked (was refused)
    assert train(make_cfg(**{"teacher.mode": "cached"}), export=False)["global_step"] > 0


def test_a_single_process_run_builds_its_missing_cache_and_several_processes_are_told_to(
    make_cfg, capsys, monkeypatch
):
    from dskd.core.errors import DSKDError
    from dskd.core.stamps import STAMP
    from dskd.teacher_cache.store import META_FILE

    cfg = make_cfg(**{"teacher.mode": "cached"})
    folder = Path(cfg.cache.dir)
    with monkeypatch.context() as started_together:  # as torchrun starts 2 processes
        started_together.setenv("RANK", "0")
        started_together.setenv("WORLD_SIZE", "2")
        with pytest.raises(DSKDError, match="dskd cache build CONFIG .* --hidden-dtype none"):
            train(cfg, export=False)
    assert not folder.exists()
    out = train(cfg, export=False)
    assert f"=== teacher cache: running -> {folder}" in capsys.readouterr().out and (folder / STAMP).is_file()
    assert out["global_step"] == 4 and (folder / META_FILE).is_file()
    # the cache built is the one `dskd cache build` writes: a build by hand gives the same arrays
    by_hand = folder.with_name("by-hand")
    build(make_cfg(**{"cache.dir": str(by_hand)}), hidden_dtype="none", process=StageProcess(progress=False))
    arrays = sorted(p.name for p in folder.glob("*.bin"))
    assert arrays == sorted(p.name for p in by_hand.glob("*.bin")) and "keys.bin" in arrays
    assert all((folder / n).read_bytes() == (by_hand / n).read_bytes() for n in arrays)


WIDTH = 12
"""The longest row of :func:`_ragged`'s batches."""


def _ragged(batch):
    """``batch`` (16 wide) with rows of 12 and 9 tokens: padded to seq_len, as with data.pad_to=seq_len."""
    am = torch.zeros_like(batch["attention_mask"])
    am[0, :WIDTH], am[1, :9] = 1, 1
    labels = batch["labels"].clone()
    labels[am == 0] = -100
    labels[0, WIDTH - 1] = labels[1, 8] = -100  # each row's last token has no target
    return batch | {"attention_mask": am, "labels": labels}


def _narrow(batch):
    """The same rows padded to the longest (data.pad_to=longest)."""
    return batch | {k: batch[k][:, :WIDTH] for k in ("input_ids", "attention_mask", "labels")}


@pytest.mark.parametrize(
    ("kd_format", "chunk_size", "cached_from"),
    [
        ("topk", None, "seq_len"),
        ("topk", 5, "longest"),
        ("sampled", None, "longest"),
        ("sampled", 5, "seq_len"),
    ],
)
def test_padding_to_the_longest_gives_the_losses_of_padding_to_seq_len(
    make_cfg, kd_format, chunk_size, cached_from
):
    """Online and cached (a cache built from batches of either width), chunked CE + KD or not, with
    the sense loss: the same CE, KD, sense loss and total in float32."""
    over = {"cache.kd_format": kd_format, "cache.samples": 16, "loss.kd.chunk_size": chunk_size}
    cfg = make_cfg(method="dskd", **over)
    tok = load_tokenizer(cfg.teacher.model)
    teacher = load_causal_lm(cfg.teacher.model, dtype="float32")
    senses = SenseDictionary.load(random_senses(cfg.senses.output_dir, VOCAB, HIDDEN))
    g = torch.Generator().manual_seed(3)
    full = [_ragged(random_batch(g, 2, cfg.data.seq_len, VOCAB, positions=4, neighbours=3)) for _ in range(2)]
    assert all(int(b["sense_pos"].max()) < WIDTH for b in full)
    cached_cfg = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, mode="cached"))
    written = full if cached_from == "seq_len" else [_narrow(b) for b in full]
    write_batch_cache(cfg.cache.dir, cached_cfg, tok, teacher, written, "float32")
    student = build_student(cfg.student, teacher)
    cache = open_cache(spec_of(cached_cfg), tok)
    modules = [
        DistillationModule(settings_of(cfg), DistillationParts(student, teacher, senses)),
        DistillationModule(settings_of(cached_cfg), DistillationParts(student, None, senses, cache=cache)),
    ]
    for module in modules:
        for batch in full:
            _, want, _ = module.losses(batch)
            _, got, _ = module.losses(_narrow(batch))
            assert set(got) == {"ce", "kd", "sense", "loss"}
            for key, value in want.items():
                assert got[key].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), key


class _Batches(pl.Callback):
    """The input ids each optimizer step trained on, by global step."""

    def __init__(self) -> None:
        self.seen: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen[trainer.global_step] = batch["input_ids"].clone()


def test_a_finished_cached_run_extended_by_max_steps_reads_the_cache_where_it_stopped(make_cfg):
    """4 cached steps, then resumed with trainer.max_steps=8, train the batches and losses of 8
    uninterrupted steps from the same cache (built for 8 steps): the extension continues the data's
    first epoch instead of asking the cache for the next one."""
    # lr: see test_equivalence.py's extension test (the schedule spans max_steps)
    cfg = make_cfg(**{"teacher.mode": "cached", "trainer.max_steps": 8, "optim.lr": 1e-12})
    build(cfg, hidden_dtype="none", process=StageProcess(progress=False))
    full, extended = _Batches(), _Batches()
    train(cfg, callbacks=[full], export=False)
    short = dataclasses.replace(cfg, name="extended", trainer=dataclasses.replace(cfg.trainer, max_steps=4))
    assert train(short, callbacks=[extended], export=False)["global_step"] == 4
    again = dataclasses.replace(short, trainer=dataclasses.replace(cfg.trainer, max_steps=8))
    assert train(again, callbacks=[extended], export=False)["global_step"] == 8
    assert sorted(full.seen) == sorted(extended.seen) == list(range(8))
    assert all(torch.equal(full.seen[s], extended.seen[s]) for s in range(8))
    want = train_losses(run_dir(cfg.runs_dir, cfg.name, cfg.seed))
    got = train_losses(run_dir(again.runs_dir, again.name, again.seed))
    assert sorted(got) == sorted(want) == list(range(1, 9))  # rows at the steps done
    assert all(got[s] == pytest.approx(want[s], abs=1e-6) for s in range(1, 9))
