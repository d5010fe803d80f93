"""Probe building blocks: Spearman and AUC against scipy/scikit-learn, WiC set construction, thresholds."""

from __future__ import annotations

import random

import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from dskd.evaluation.similarity import auc, read_pairs, spearman
from dskd.evaluation.wic import Example, best_threshold, build_wic


def test_spearman_matches_scipy_with_ties():
    rng = random.Random(0)
    x = [rng.choice([0.1, 0.2, 0.3, 0.5]) + rng.random() * 0.01 * (i % 3 == 0) for i in range(50)]
    y = [rng.randint(0, 5) for _ in range(50)]  # many ties
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-9)


def test_auc_matches_sklearn():
    rng = random.Random(1)
    pos = [round(rng.gauss(0.6, 0.2), 1) for _ in range(40)]
    neg = [round(rng.gauss(0.5, 0.2), 1) for _ in range(30)]
    expected = roc_auc_score([1] * 40 + [0] * 30, pos + neg)
    assert auc(pos, neg) == pytest.approx(expected)


def test_read_pairs_skips_comments(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# header\n# Word 1\tWord 2\tHuman\nold\tnew\t1.58\nsmart\tintelligent\t9.2\n")
    assert read_pairs(f) == [("old", "new", 1.58), ("smart", "intelligent", 9.2)]


def _examples():
    """Lemma 'bank.n' with 2 synsets (3 + 2 examples), 'run.v' 2 synsets, 'cat.n' with one synset only."""
    out = []
    for lemma, pos, per_synset in [
        ("bank", "n", [3, 2]),
        ("run", "v", [2, 2]),
        ("play", "v", [2, 3]),
        ("cat", "n", [4]),
    ]:
        for s, count in enumerate(per_synset):
            for i in range(count):
                text = f"sentence {i} of sense {s} with {lemma}"
                start = text.index(lemma)
                out.append(Example(text, f"{lemma}.{pos}.0{s + 1}", lemma, start, start + len(lemma)))
    return out


def test_wic_pairs_are_labelled_balanced_and_disjoint_by_lemma():
    dev, test = build_wic(_examples(), n_per_split=8, seed=0)
    for split in (dev, test):
        assert split, "each split gets pairs"
        assert sum(p.same for p in split) == sum(not p.same for p in split)
        for p in split:
            assert p.a.lemma == p.b.lemma and p.a.text != p.b.text
            assert p.same == (p.a.synset == p.b.synset)
            assert p.a.lemma != "cat"  # a lemma with one synset cannot give different-sense pairs
    assert not {p.a.lemma for p in dev} & {p.a.lemma for p in test}


def test_wic_is_seeded():
    a = build_wic(_examples(), 8, seed=3)
    assert a == build_wic(_examples(), 8, seed=3)


@pytest.mark.parametrize(
    ("scores", "labels", "accuracy"),
    [([0.1, 0.2, 0.8, 0.9], [False, False, True, True], 1.0), ([0.9, 0.1, 0.5], [True, False, False], 1.0)],
)
def test_best_threshold_separates(scores, labels, accuracy):
    t = best_threshold(scores, labels)
    assert sum((s >= t) == y for s, y in zip(scores, labels)) / len(labels) == accuracy
