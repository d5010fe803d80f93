"""On-policy distillation: the prefix rule, the seeded choice of batches, the student's sampled
continuations (checked against a plain argmax loop), the losses of an on-policy step, exact resume."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import signal

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from transformers import GenerationConfig

from dskd.core.batch import IGNORE_INDEX
from dskd.core.errors import ConfigError, TrainingInterrupted
from dskd.data.config import OnPolicyConfig
from dskd.models.loading import load_causal_lm, load_tokenizer
from dskd.models.shared import StageProcess
from dskd.models.student import build_student
from dskd.senses import SenseDictionary
from dskd.teacher_cache.build import build, open_cache
from dskd.teacher_cache.store import CachedTeacher
from dskd.testing.fixtures import random_batch, write_batch_cache
from dskd.training import on_policy
from dskd.training.module import DistillationModule, DistillationParts
from dskd.training.on_policy import Stops, fraction_for_one, is_on_policy, prefix_lengths, sample_batch
from dskd.training.run import run_dir, train
from tests.sections import settings_of, spec_of

from .tinyrun import (
    VOCAB,
    corpus_config,
    make_senses,
    metrics_rows,
    random_batches,
    real_datamodule,
    tiny_config,
    write_corpus,
)


def test_prefix_is_the_prompt_else_a_fraction_leaving_a_token_to_replace():
    lengths = torch.tensor([10, 4, 1, 2, 7])
    am = (torch.arange(10)[None, :] < lengths[:, None]).long()
    prompt = torch.tensor([3, 0, 0, 5, 7])  # 5 >= 2 tokens and 7 >= 7 tokens leave nothing to replace
    assert prefix_lengths(am, prompt, 0.5).tolist() == [3, 2, 1, 1, 4]  # round(3.5) = 4 (half to even)
    assert prefix_lengths(am, None, 0.25).tolist() == [2, 1, 1, 1, 2]
    assert prefix_lengths(am, None, 0.99).tolist() == [9, 3, 1, 1, 6]


def test_the_choice_of_batches_is_seeded_and_has_the_asked_fraction():
    picks = [is_on_policy(0, i, 0.25) for i in range(4000)]
    assert picks == [is_on_policy(0, i, 0.25) for i in range(4000)]
    assert picks != [is_on_policy(1, i, 0.25) for i in range(4000)]
    assert abs(sum(picks) / len(picks) - 0.25) < 0.03  # 4 binomial standard deviations
    assert not any(is_on_policy(0, i, 0.0) for i in range(100))
    assert all(is_on_policy(0, i, 1.0) for i in range(100))


@pytest.mark.parametrize(("seed", "n"), [(0, 1), (0, 60), (3, 500)])
def test_fraction_for_one_makes_exactly_that_batch_on_policy(seed, n):
    fraction, index = fraction_for_one(seed, n)
    assert [i for i in range(n) if is_on_policy(seed, i, fraction)] == [index]
    assert not is_on_policy(seed, index, math.nextafter(fraction, 0.0) - 1e-12)  # no smaller one would do


@pytest.fixture
def student(teacher_dir):
    model = load_causal_lm(teacher_dir, dtype="float32")
    model.train()
    return model


def _padded_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (3, 12), generator=g)
    am = torch.ones(3, 12, dtype=torch.long)
    am[1, 8:] = 0
    am[2, 5:] = 0
    return {"input_ids": ids.masked_fill(am == 0, 1), "attention_mask": am, "labels": ids}


def _greedy(model, prefix: list[int], steps: int, eos: int) -> list[int]:
    """Argmax continuation by full forward passes over the unpadded prefix (no cache, no padding)."""
    ids = list(prefix)
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            ids.append(nxt)
            if nxt == eos:
                break
    return ids[len(prefix) :]


def test_greedy_continuations_match_a_plain_loop_and_only_sampled_tokens_are_targets(student):
    batch = _padded_batch()
    cfg = OnPolicyConfig(fraction=1.0, temperature=0.0, max_new_tokens=5, prefix_fraction=0.5)
    out = sample_batch(student, batch, cfg, stops=Stops([2], 1), seed=0)
    assert student.training  # back in training mode
    new = out.batch
    prefix = [6, 4, 2]  # half of 12, 8 and 5 tokens (2.5 rounds to 2)
    total = 0
    for b, p in enumerate(prefix):
        n = int(new["attention_mask"][b].sum())
        assert torch.equal(new["input_ids"][b, :p], batch["input_ids"][b, :p])
        want = _greedy(student, batch["input_ids"][b, :p].tolist(), 5, eos=2)
        assert new["input_ids"][b, p:n].tolist() == want
        assert (new["input_ids"][b, n:] == 1).all() and (new["attention_mask"][b, :n] == 1).all()
        targets = new["labels"][b] != IGNORE_INDEX
        assert targets.nonzero().squeeze(1).tolist() == list(range(p - 1, n - 1))
        assert new["labels"][b, p - 1 : n - 1].tolist() == want
        total += len(want)
    assert out.new_tokens == total == 15 and out.seconds > 0


def test_a_row_ends_after_its_first_eos(student):
    batch = _padded_batch()
    cfg = OnPolicyConfig(fraction=1.0, temperature=0.0, max_new_tokens=5)
    first = int(sample_batch(student, batch, cfg, stops=Stops([2], 1), seed=0).batch["input_ids"][0, 6])
    out = sample_batch(student, batch, cfg, stops=Stops([2, first], 1), seed=0)  # that token now ends row 0
    assert int(out.batch["attention_mask"][0].sum()) == 7
    assert out.batch["labels"][0].ne(IGNORE_INDEX).nonzero().squeeze(1).tolist() == [5]


class _Scripted(nn.Module):
    """A student whose generate appends ``continuation`` to every prompt (ignoring the stop ids, as a
    backend could), with the given generation config."""

    def __init__(self, continuation: list[int], eos: int | list[int]) -> None:
        super().__init__()
        self.continuation = continuation
        self.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=1)
        self.asked: list[int] = []

    def generate(self, input_ids, attention_mask, generation_config):
        self.asked = generation_config.eos_token_id
        tail = torch.tensor(self.continuation).expand(len(input_ids), -1)
        return torch.cat([input_ids, tail], dim=1)


@pytest.mark.parametrize(
    ("config_eos", "tokenizer_eos"),
    [([2, 7], None), (2, 7)],  # Llama 3 Instruct: [<|end_of_text|>, <|eot_id|>]; a chat template's EOS
)
def test_a_row_ends_at_any_stop_token_as_in_trl(config_eos, tokenizer_eos):
    """TRL's GKD generates with every EOS id, so [5, 7, 9, 9, 9, 9] stops at [5, 7] and the padding
    after it is out of the loss (labels -100, attention 0); taking only the first EOS id kept it all."""
    student = _Scripted([5, 7, 9, 9, 9, 9], config_eos)
    batch = _padded_batch()
    cfg = OnPolicyConfig(fraction=1.0, temperature=0.0, max_new_tokens=6, prefix_fraction=0.5)
    new, logs = on_policy.training_batch(
        student, batch, cfg, on_policy.BatchKey(0, 0, 0), ends=on_policy.DataEnds(tokenizer_eos)
    )
    assert student.asked == [2, 7] and logs["train/gen_tokens"] == 3 * 2
    for b, p in enumerate([6, 4, 2]):
        assert new["input_ids"][b, p : p + 2].tolist() == [5, 7] and (new["input_ids"][b, p + 2 :] == 1).all()
        assert new["attention_mask"][b].nonzero().squeeze(1).tolist() == list(range(p + 2))
        assert new["labels"][b].ne(IGNORE_INDEX).nonzero().squeeze(1).tolist() == [p - 1, p]
        assert new["labels"][b, p - 1 : p + 1].tolist() == [5, 7]


def test_sampling_is_reproducible_by_seed_and_respects_the_budget(student):
    batch = _padded_batch()
    cfg = OnPolicyConfig(fraction=1.0, temperature=1.0, top_p=0.9, max_new_tokens=30)
    a = sample_batch(student, batch, cfg, stops=Stops([2], 1), seed=7).batch
    b = sample_batch(student, batch, cfg, stops=Stops([2], 1), seed=7).batch
    c = sample_batch(student, batch, cfg, stops=Stops([2], 1), seed=8).batch
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_ids"], c["input_ids"])
    assert a["input_ids"].shape == (3, 12)  # the sequence length caps the continuation


def test_an_on_policy_kd_step_has_no_ce_and_logs_its_generation(run_tmp, teacher_dir):
    over = {"data.on_policy.fraction": 1.0, "data.on_policy.max_new_tokens": 4, "trainer.max_steps": 3}
    cfg = tiny_config(run_tmp, teacher_dir, "kd", over)
    train(cfg, datamodule=random_batches(n=4), export=False)
    rows = [r for r in metrics_rows(run_dir(cfg.runs_dir, cfg.name, cfg.seed)) if r.get("train/loss")]
    assert len(rows) == 3
    for r in rows:
        assert float(r["train/on_policy"]) == 1.0 and math.isnan(float(r["train/ce"]))
        assert float(r["train/loss"]) == pytest.approx(float(r["train/kd"]), rel=1e-6)  # KD only
        assert float(r["train/gen_tokens"]) > 0 and float(r["train/gen_tokens_per_s"]) > 0


def test_dskd_on_policy_needs_the_dskd_data_module(run_tmp, teacher_dir):
    over = {"data.on_policy.fraction": 1.0, "senses.output_dir": str(run_tmp / "senses")}
    cfg = tiny_config(run_tmp, teacher_dir, "dskd", over)
    with pytest.raises(ConfigError, match="needs the DSKD data module"):
        train(cfg, datamodule=random_batches(n=4), export=False)


def _hybrid_modules(tmp, teacher_dir):
    """(online, pure cached, hybrid: cached with on-policy batches) DSKD modules with identical
    students; the cache (sampled KD targets, float32 hidden states) holds the two data batches."""
    over = {
        "cache.dir": str(tmp / "cache"),
        "cache.hidden_positions": "all",
        "data.seq_len": 12,
        "data.on_policy.max_new_tokens": 6,
    }
    online_cfg = tiny_config(tmp, teacher_dir, "dskd", over)
    cached_cfg = tiny_config(tmp, teacher_dir, "dskd", {**over, "teacher.mode": "cached"})
    hybrid_cfg = tiny_config(
        tmp, teacher_dir, "dskd", {**over, "teacher.mode": "cached", "data.on_policy.fraction": 0.5}
    )
    tok, teacher = load_tokenizer(str(teacher_dir)), load_causal_lm(teacher_dir, dtype="float32")
    g = torch.Generator().manual_seed(0)
    batches = [random_batch(g, 2, 12, VOCAB, positions=3, neighbours=2) for _ in range(2)]
    write_batch_cache(cached_cfg.cache.dir, cached_cfg, tok, teacher, batches, "float32")
    senses = SenseDictionary.load(str(tmp / "senses"))
    student = build_student(online_cfg.student, teacher)
    online = DistillationModule(settings_of(online_cfg), DistillationParts(student, teacher, senses))
    cache = open_cache(spec_of(cached_cfg), tok)
    cached_parts = DistillationParts(copy.deepcopy(student), None, senses, cache=cache)
    cached = DistillationModule(settings_of(cached_cfg), cached_parts)
    cache = open_cache(spec_of(hybrid_cfg), tok)
    hybrid_parts = DistillationParts(copy.deepcopy(student), teacher, senses, cache=cache)
    hybrid = DistillationModule(settings_of(hybrid_cfg), hybrid_parts)
    return online, cached, hybrid, batches


def test_a_cached_run_scores_on_policy_batches_with_the_live_teacher_and_data_from_the_cache(
    run_tmp, teacher_dir
):
    online, cached, hybrid, batches = _hybrid_modules(run_tmp, teacher_dir)
    op = hybrid.settings.on_policy
    for i, batch in enumerate(batches):
        # a data batch: what the pure cached run computes (sampled KD: not the online value)
        _, want, _ = cached.losses(batch)
        _, got, _ = hybrid.losses(batch)
        assert {k: v.item() for k, v in got.items()} == {k: v.item() for k, v in want.items()}
        assert got["kd"].item() != online.losses(batch)[1]["kd"].item()
        # the student's own continuation, which no cache holds: what the online run computes
        generated = sample_batch(hybrid.student, batch, op, stops=Stops([2], 1), seed=i).batch
        assert not torch.equal(generated["input_ids"], batch["input_ids"])
        generated |= {k: v for k, v in batch.items() if k not in generated}  # the same sense sample
        _, want, _ = online.losses(generated, on_policy=True)
        _, got, _ = hybrid.losses(generated, on_policy=True)
        assert {k: v.item() for k, v in got.items()} == {k: v.item() for k, v in want.items()}
        assert got["ce"].item() == 0.0 and got["kd"].item() > 0 and got["sense"].item() > 0
    with pytest.raises(ConfigError, match="needs the teacher model too"):
        parts = DistillationParts(hybrid.student, None, hybrid.senses, cache=hybrid.signals.data.cache)
        DistillationModule(hybrid.settings, parts)


class _RecordOnPolicy:
    """Wraps the real sample_batch: the batches it built, by the seed they were sampled with."""

    def __init__(self) -> None:
        self.built: dict[int, dict[str, torch.Tensor]] = {}

    def __call__(self, student, batch, cfg, *, stops, seed):
        out = sample_batch(student, batch, cfg, stops=stops, seed=seed)
        self.built[seed] = {k: v.clone() for k, v in out.batch.items()}
        return out


@pytest.mark.parametrize(
    "mode", ["online", "cached"]
)  # cached: a hybrid, the live teacher on on-policy batches
def test_sigterm_and_resume_repeat_the_on_policy_batches_of_an_uninterrupted_run(
    tmp_path, teacher_dir, monkeypatch, mode
):
    class Terminate(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 5:
                os.kill(os.getpid(), signal.SIGTERM)

    make_senses(tmp_path / "senses")
    corpus = write_corpus(tmp_path / "corpus.txt", docs=24)
    over = {
        "senses.output_dir": str(tmp_path / "senses"),
        "trainer.max_steps": 10,
        "trainer.checkpoint_every_n_steps": 4,
        "data.on_policy.fraction": 0.5,
        "data.on_policy.max_new_tokens": 6,
        "cache.dir": str(tmp_path / "cache"),
        "cache.hidden_positions": "all",
    }
    full, stopped = (corpus_config(tmp_path / n, teacher_dir, corpus, "dskd", over) for n in ("a", "b"))
    if mode == "cached":  # one cache, built by the project's builder, serves both runs' data batches
        build(full, hidden_dtype="float32", process=StageProcess(progress=False))
        full, stopped = (
            dataclasses.replace(c, teacher=dataclasses.replace(c.teacher, mode=mode)) for c in (full, stopped)
        )
    looked_up = []  # the batches the cache served in the uninterrupted run
    lookup = CachedTeacher.lookup
    monkeypatch.setattr(
        CachedTeacher, "lookup", lambda c, ids, am: looked_up.append(ids) or lookup(c, ids, am)
    )
    seen_full, seen_stopped = _RecordOnPolicy(), _RecordOnPolicy()
    monkeypatch.setattr(on_policy, "sample_batch", seen_full)
    train(full, datamodule=real_datamodule(full), export=False)
    monkeypatch.setattr(CachedTeacher, "lookup", lookup)
    monkeypatch.setattr(on_policy, "sample_batch", seen_stopped)
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 6"):
        train(stopped, datamodule=real_datamodule(stopped), callbacks=[Terminate()], export=False)
    before = set(seen_stopped.built)
    assert train(stopped, datamodule=real_datamodule(stopped), export=False)["global_step"] == 10
    after = set(seen_stopped.built) - before
    rows = {
        run: {
            int(r["step"]): r
            for r in metrics_rows(run_dir(cfg.runs_dir, cfg.name, cfg.seed))
            if r.get("train/loss")
        }
        for run, cfg in (("a", full), ("b", stopped))
    }
    assert sorted(rows["a"]) == sorted(rows["b"]) == list(range(1, 11))  # rows at the steps done
    flags = [float(rows["a"][s + 1]["train/on_policy"]) for s in range(10)]
    assert flags == [float(rows["b"][s + 1]["train/on_policy"]) for s in range(10)]
    assert 0 < sum(flags[6:]) < 4 and 0 < sum(flags[:6])  # on- and off-policy steps after the resume
    assert seen_full.built.keys() == seen_stopped.built.keys() and len(after) == sum(flags[6:])
    if mode == "cached":  # every data batch (and validation) from the cache, no generated one
        assert len(looked_up) > 10 - sum(flags)
        generated = [b["input_ids"] for b in seen_full.built.values()]
        assert not any(torch.equal(ids, g) for ids in looked_up for g in generated)
    else:
        assert not looked_up
    for seed, batch in seen_full.built.items():
        for key in batch:
            assert torch.equal(batch[key], seen_stopped.built[seed][key]), (seed, key)
    for step in range(1, 11):
        for key in ("train/loss", "train/kd", "train/sense", "train/gen_tokens"):
            assert float(rows["b"][step][key]) == pytest.approx(float(rows["a"][step][key]), abs=1e-6)
