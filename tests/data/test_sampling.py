"""Sense-loss positions and candidates against a plain-Python reference with the same random draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dskd.core.batch import IGNORE_INDEX as IGNORE
from dskd.data.sampling import (
    NeighbourTable,
    SenseDraw,
    max_positions_for,
    num_positions,
    restrict_to_synset,
    sample_sense_batch,
)

from .conftest import random_table

VOCAB = 300


def sample_sense_positions(
    labels: np.ndarray,
    table: NeighbourTable,
    rng: np.random.Generator,
    *,
    overrides: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
    **kw,
) -> dict[str, np.ndarray]:
    """:func:`sample_sense_batch` of one sequence (arrays without the batch dimension)."""
    out = sample_sense_batch(np.asarray(labels)[None], table, [rng], SenseDraw(**kw), [overrides or {}])
    return {k: v[0] for k, v in out.items()}


def reference(labels, table, rng, width, max_positions=25, fraction=0.4, max_neighbours=25, overrides=None):
    """docs/method.md §3.1 written as loops, drawing from ``rng`` in the documented order."""
    overrides = overrides or {}

    def neighbours(kind, p):
        if p in overrides:
            return list(overrides[p][0 if kind == "syn" else 1])
        t = int(labels[p])
        return list(table.row(kind, t)) if 0 <= t < table.num_heads else []

    valid = [p for p in range(len(labels)) if labels[p] != IGNORE]
    V = [p for p in valid if neighbours("syn", p) or neighbours("ant", p)]
    n = len(V)
    m = min(max_positions, n)
    if fraction * n > max_positions:
        m = math.floor(fraction * n)
    p1 = [V[i] for i in rng.choice(n, size=m, replace=False)] if m else []
    p2 = [valid[i] for i in rng.choice(len(valid), size=m, replace=False)] if m else []
    out = {"n": n, "p1": p1, "p2": p2}
    for kind in ("syn", "ant"):
        lists = [neighbours(kind, p) for p in p1]
        u = rng.random(sum(len(x) for x in lists))
        k, rows = 0, []
        for lst in lists:
            draws = u[k : k + len(lst)]
            k += len(lst)
            rows.append([lst[i] for i in sorted(range(len(lst)), key=lambda i: draws[i])][:max_neighbours])
        out[kind] = rows
    return out


def unpad(keys, mask):
    return [list(k[m]) for k, m in zip(keys, mask) if m.any()]


@pytest.mark.parametrize(
    "n,m", [(0, 0), (1, 1), (10, 10), (25, 25), (62, 25), (63, 25), (64, 25), (65, 26), (128, 51)]
)
def test_number_of_positions(n, m):
    assert num_positions(n) == m  # 0.4 * 64 = 25.6 -> 25; 0.4 * 65 = 26


def test_padded_width():
    assert max_positions_for(128) == 51 and max_positions_for(32) == 25 and max_positions_for(64) == 25


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("seq_len", [16, 128])
def test_matches_reference(seed, seq_len):
    table = random_table(VOCAB, seed=seed)
    gen = np.random.default_rng(1000 + seed)
    labels = gen.integers(0, VOCAB + 20, seq_len)  # some ids outside the table
    labels[gen.random(seq_len) < 0.15] = IGNORE
    width = max_positions_for(seq_len)
    got = sample_sense_positions(labels, table, np.random.default_rng([seed, 7]), width=width)
    ref = reference(labels, table, np.random.default_rng([seed, 7]), width)
    m = len(ref["p1"])
    assert int(got["n_neighbour_positions"]) == ref["n"]
    assert got["sense_pos_mask"].sum() == m and got["rand_pos_mask"].sum() == m
    assert list(got["sense_pos"][:m]) == ref["p1"] and list(got["rand_pos"][:m]) == ref["p2"]
    assert not got["sense_pos"][m:].any()
    for kind in ("syn", "ant"):
        keys, mask = got[f"{kind}_keys"], got[f"{kind}_mask"]
        assert keys.shape == mask.shape == (width, 25)
        assert [list(k[mk]) for k, mk in zip(keys[:m], mask[:m])] == ref[kind]
        assert not mask[m:].any()


def test_set_properties():
    table = random_table(VOCAB, seed=3, p=0.9)
    labels = np.random.default_rng(0).integers(0, VOCAB, 128)
    got = sample_sense_positions(labels, table, np.random.default_rng(0), width=51)
    syn_deg, ant_deg = table.degrees(labels)
    V = set(np.flatnonzero(syn_deg + ant_deg > 0).tolist())
    p1 = got["sense_pos"][got["sense_pos_mask"]]
    assert len(set(p1.tolist())) == len(p1) == num_positions(len(V)) and set(p1.tolist()) <= V
    p2 = got["rand_pos"][got["rand_pos_mask"]]
    assert len(set(p2.tolist())) == len(p2)
    for j, p in enumerate(p1.tolist()):
        for kind in ("syn", "ant"):
            row = set(table.row(kind, int(labels[p])).tolist())
            chosen = got[f"{kind}_keys"][j][got[f"{kind}_mask"][j]].tolist()
            assert len(set(chosen)) == len(chosen) == min(len(row), 25) and set(chosen) <= row


def test_neighbour_subsample_is_uniform():
    """A 40-neighbour row sampled down to 25: each neighbour kept with probability 25/40."""
    table = NeighbourTable(
        np.array([0, 40]), np.arange(100, 140), np.array([0, 0]), np.zeros(0, dtype=np.int64)
    )
    counts = np.zeros(40)
    trials = 2000
    for s in range(trials):
        got = sample_sense_positions(np.array([0]), table, np.random.default_rng(s), width=25)
        counts[got["syn_keys"][0][got["syn_mask"][0]] - 100] += 1
    assert np.abs(counts / trials - 25 / 40).max() < 0.05  # binomial sd ~ 0.011


def test_no_neighbour_positions_gives_empty_masks():
    table = random_table(VOCAB, seed=1, p=0.0)
    got = sample_sense_positions(np.arange(20), table, np.random.default_rng(0), width=25)
    assert int(got["n_neighbour_positions"]) == 0
    assert not got["sense_pos_mask"].any() and not got["rand_pos_mask"].any() and not got["syn_mask"].any()


def test_sense_aligned_overrides_match_reference():
    table = random_table(VOCAB, seed=5, p=0.8)
    labels = np.random.default_rng(5).integers(0, VOCAB, 12)  # n <= 25: every position of V is in P1
    syn_deg, ant_deg = table.degrees(labels)
    p, q = np.flatnonzero((syn_deg >= 2) & (ant_deg >= 1))[:2].tolist()
    t = int(labels[p])
    row_syn, row_ant = table.row("syn", t), table.row("ant", t)
    keep_syn, keep_ant = row_syn[::2], row_ant[:1]
    table.synset_keys = lambda name: (
        (np.concatenate([keep_syn, [9999]]), keep_ant) if name == "x.n.01" else ([], [])
    )
    syn, ant = restrict_to_synset(table, t, "x.n.01")
    allowed = {*keep_syn.tolist(), 9999, *keep_ant.tolist()}  # the synset's lemma and antonym keys
    assert syn.tolist() == [k for k in row_syn.tolist() if k in allowed]
    assert ant.tolist() == [k for k in row_ant.tolist() if k in allowed] and len(ant) >= 1
    empty = restrict_to_synset(table, int(labels[q]), "other.n.01")
    overrides = {p: (syn, ant), q: empty}  # q loses all its neighbours: not in V
    got = sample_sense_positions(labels, table, np.random.default_rng(1), width=25, overrides=overrides)
    ref = reference(labels, table, np.random.default_rng(1), 25, overrides=overrides)
    m = len(ref["p1"])
    assert p in ref["p1"] and q not in ref["p1"]
    assert list(got["sense_pos"][:m]) == ref["p1"]
    j = ref["p1"].index(p)
    assert set(got["syn_keys"][j][got["syn_mask"][j]].tolist()) == set(syn.tolist())
    for kind in ("syn", "ant"):
        assert [list(k[mk]) for k, mk in zip(got[f"{kind}_keys"][:m], got[f"{kind}_mask"][:m])] == ref[kind]


def test_batch_equals_sequences_one_by_one():
    table = random_table(VOCAB, seed=9, p=0.6)
    labels = np.random.default_rng(9).integers(0, VOCAB, (4, 128))
    labels[2, :100] = IGNORE
    labels[3] = IGNORE  # no targets at all
    batch = sample_sense_batch(
        labels, table, [np.random.default_rng([0, b]) for b in range(4)], SenseDraw(51)
    )
    for b in range(4):
        one = sample_sense_positions(labels[b], table, np.random.default_rng([0, b]), width=51)
        assert all(np.array_equal(batch[k][b], one[k]) for k in one)
    assert batch["n_neighbour_positions"][3] == 0 and not batch["sense_pos_mask"][3].any()


def test_with_senses_only_keeps_exactly_the_neighbours_that_have_senses():
    table = random_table(VOCAB, seed=3)
    has = np.random.default_rng(0).random(VOCAB + 400) < 0.4  # keys beyond the mask have no senses
    kept = table.with_senses_only(has)
    assert kept.num_heads == table.num_heads
    for kind in ("syn", "ant"):
        for t in range(table.num_heads):
            want = [k for k in table.row(kind, t) if k < len(has) and has[k]]
            assert kept.row(kind, t).tolist() == want
    labels = np.random.default_rng(1).integers(0, VOCAB, (3, 60))
    out = sample_sense_batch(labels, kept, [np.random.default_rng(s) for s in range(3)], SenseDraw(30))
    for kind in ("syn", "ant"):
        drawn = out[f"{kind}_keys"][out[f"{kind}_mask"]]
        assert len(drawn) > 0 and has[drawn].all()


def test_with_senses_only_filters_the_synset_keys_too():
    table = NeighbourTable(
        np.array([0, 2]), np.array([5, 6]), np.array([0, 1]), np.array([7]),
        synset_keys=lambda name: ([5, 6, 9], [7]),
    )  # fmt: skip
    has = np.zeros(10, dtype=bool)
    has[[6, 9]] = True
    kept = table.with_senses_only(has)
    lemmas, antonyms = kept.synset_keys("x.n.01")
    assert lemmas.tolist() == [6, 9] and antonyms.tolist() == []
    assert kept.row("syn", 0).tolist() == [6] and kept.row("ant", 0).tolist() == []
