"""Hidden states only where the sense loss can read them: the token table, exact sense loss from
the sparse cache, and clear refusals for positions it does not hold."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dskd.core.batch import IGNORE_INDEX
from dskd.core.errors import ArtifactMismatchError, ConfigError
from dskd.core.io import read_json
from dskd.lexicon import Lexicon
from dskd.models.loading import load_causal_lm, load_tokenizer
from dskd.models.student import build_student
from dskd.senses import SenseDictionary
from dskd.teacher_cache import build as cache_build
from dskd.teacher_cache.positions import needs_hidden, token_table
from dskd.testing.fixtures import random_batch, random_senses, write_batch_cache
from dskd.training.module import DistillationModule, DistillationParts
from tests.sections import settings_of, spec_of

from .conftest import HIDDEN, VOCAB


def _lexicon(heads_syn: list[int], heads_ant: list[int], vocab: int) -> Lexicon:
    """A real Lexicon object whose rows ``heads_syn`` have one synonym and ``heads_ant`` one antonym."""

    def csr(heads):
        deg = np.zeros(vocab, dtype=np.int64)
        deg[heads] = 1
        indptr = np.concatenate([[0], np.cumsum(deg)])
        return indptr, np.zeros(int(deg.sum()), dtype=np.int64)

    arrays = {}
    for rel, heads in (("syn", heads_syn), ("ant", heads_ant), ("hyp", [])):
        indptr, indices = csr(heads)
        arrays |= {
            f"{rel}_indptr": indptr,
            f"{rel}_indices": indices,
            f"{rel}_sources": np.ones_like(indices),
        }
    return Lexicon(arrays, {"tokenizer": {"name": "t", "vocab_size": vocab, "fingerprint": "x"}}, Path("."))


def test_token_table_is_neighbours_or_senses_within_the_vocabulary():
    table = token_table(_lexicon([1, 4], [4, 7], 10), np.array([2, 7, 12]), 10)  # 12: a VID
    assert np.flatnonzero(table).tolist() == [1, 2, 4, 7]
    labels = torch.tensor([[1, 3, IGNORE_INDEX, 7]])
    assert needs_hidden(labels, table).tolist() == [[True, False, False, True]]


def _table(batches) -> np.ndarray:
    """Even tokens (the random dictionary's keys) and the targets of every drawn P1 position."""
    table = np.zeros(VOCAB, dtype=bool)
    table[::2] = True
    for b in batches:
        table[b["labels"].gather(1, b["sense_pos"])[b["sense_pos_mask"]].numpy()] = True
    return table


def _setup(make_cfg, monkeypatch):
    cfg = make_cfg(method="dskd", **{"cache.hidden_positions": "sense", "cache.top_k": VOCAB})
    tok = load_tokenizer(cfg.teacher.model)
    teacher = load_causal_lm(cfg.teacher.model, dtype="float32")
    senses = SenseDictionary.load(random_senses(cfg.senses.output_dir, VOCAB, HIDDEN))
    g = torch.Generator().manual_seed(0)
    batches = [random_batch(g, 2, cfg.data.seq_len, VOCAB, positions=4, neighbours=3) for _ in range(2)]
    table = _table(batches)
    monkeypatch.setattr(
        cache_build, "hidden_tokens", lambda lexicon_dir, senses_dir, vocab: table
    )  # stands in for the lexicon
    cached_cfg = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, mode="cached"))
    write_batch_cache(cfg.cache.dir, cached_cfg, tok, teacher, batches, "float32")
    return cfg, cached_cfg, tok, teacher, senses, batches, table


def test_sparse_hidden_states_give_the_online_sense_loss(make_cfg, monkeypatch):
    cfg, cached_cfg, tok, teacher, senses, batches, table = _setup(make_cfg, monkeypatch)
    cache = cache_build.open_cache(spec_of(cached_cfg), tok)
    meta = read_json(f"{cfg.cache.dir}/meta.json")
    assert meta["hidden_positions"] == "sense" and 0 < meta["hidden_rows"] < 4 * cfg.data.seq_len
    student = build_student(cfg.student, teacher)
    online = DistillationModule(settings_of(cfg), DistillationParts(student, teacher, senses))
    cached = DistillationModule(
        settings_of(cached_cfg),
        DistillationParts(copy.deepcopy(student), None, senses, cache=cache),
    )
    for batch in batches:
        out = cache.lookup(batch["input_ids"], batch["attention_mask"])
        assert torch.equal(out.hidden_stored, needs_hidden(batch["labels"], table))
        hidden = teacher.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        h = hidden.last_hidden_state.detach()
        assert torch.equal(out.hidden[out.hidden_stored], h[out.hidden_stored])
        assert (out.hidden[~out.hidden_stored] == 0).all()
        _, want, _ = online.losses(batch)
        _, got, _ = cached.losses(batch)
        assert got["sense"].item() == want["sense"].item()  # float32: exact where the loss reads
        assert got["kd"].item() == pytest.approx(want["kd"].item(), abs=1e-5)


def test_a_run_needing_other_positions_is_refused(make_cfg, monkeypatch):
    cfg, cached_cfg, tok, teacher, senses, batches, table = _setup(make_cfg, monkeypatch)
    more = table.copy()
    more[np.flatnonzero(~table)[:3]] = True  # a run whose lexicon has neighbours for 3 more tokens
    monkeypatch.setattr(cache_build, "hidden_tokens", lambda lexicon_dir, senses_dir, vocab: more)
    with pytest.raises(ArtifactMismatchError, match="field 'hidden_tokens' lacks 3 target tokens"):
        cache_build.open_cache(spec_of(cached_cfg), tok)
    monkeypatch.setattr(cache_build, "hidden_tokens", lambda lexicon_dir, senses_dir, vocab: table)
    cache = cache_build.open_cache(spec_of(cached_cfg), tok)
    with pytest.raises(ArtifactMismatchError, match="'hidden_positions' is 'sense'"):
        cache.check_hidden_tokens(None)  # a caller that needs every position
    parts = DistillationParts(build_student(cfg.student, teacher), None, senses, cache=cache)
    module = DistillationModule(settings_of(cached_cfg), parts)
    bad = dict(batches[0])
    stored = cache.lookup(bad["input_ids"], bad["attention_mask"]).hidden_stored
    free = (~stored[0]).nonzero()[0]  # a position without a stored state
    bad["sense_pos"] = bad["sense_pos"].clone()
    bad["sense_pos_mask"] = bad["sense_pos_mask"].clone()
    bad["sense_pos"][0, 0], bad["sense_pos_mask"][0, 0] = free, True
    with pytest.raises(
        ConfigError, match="1 sense-loss positions of this batch have no teacher hidden state"
    ):
        module.losses(bad)
