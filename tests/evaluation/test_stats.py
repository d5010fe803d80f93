"""Paired bootstrap: hand-computed cases, scipy.stats.bootstrap, a brute-force loop, and narrowing with n."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from dskd.core.errors import DSKDError
from dskd.evaluation.stats import STATISTICS, paired_bootstrap, statistic

MEAN = STATISTICS["mean"]


def test_two_items_hand_computed():
    # per-item differences (0, 1): a resample's mean difference is 0 (p 1/4), 0.5 (1/2) or 1 (1/4),
    # so the 2.5th and 97.5th percentiles are 0 and 1, which does not exclude 0
    d = paired_bootstrap([0.0, 1.0], [0.0, 0.0], MEAN, n_resamples=2000, seed=0)
    assert d == (0.5, 0.0, 1.0) and not d.significant


def test_a_constant_difference_has_a_zero_width_significant_interval():
    b = np.random.default_rng(1).random(50)
    d = paired_bootstrap(b - 0.1, b, MEAN)
    assert d.diff == pytest.approx(-0.1) and d.lo == pytest.approx(-0.1) and d.hi == pytest.approx(-0.1)
    assert d.significant


def test_mean_difference_matches_scipy_paired_bootstrap():
    rng = np.random.default_rng(2)
    b = rng.normal(size=300)  # continuous, so that the percentiles do not sit on a grid of 1/300
    a = b + rng.normal(0.05, 0.5, 300)
    ours = paired_bootstrap(a, b, MEAN, n_resamples=10000, seed=0)
    ref = sps.bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis) - y.mean(axis),
        paired=True,
        vectorized=True,
        n_resamples=10000,
        method="percentile",
        random_state=1,
    ).confidence_interval
    width = ref.high - ref.low
    assert ours.diff == pytest.approx(a.mean() - b.mean())
    assert ours.lo == pytest.approx(ref.low, abs=0.03 * width)
    assert ours.hi == pytest.approx(ref.high, abs=0.03 * width)


def test_the_interval_narrows_with_more_items():
    def width(n: int) -> float:
        rng = np.random.default_rng(3)
        b = rng.normal(size=n)
        d = paired_bootstrap(b + rng.normal(0.1, 1.0, n), b, MEAN, seed=0)
        return d.hi - d.lo

    assert width(800) < width(50) / 2  # about 1 / sqrt(16) = 1/4 of it


def test_spearman_resamples_pairs_like_a_brute_force_loop():
    rng = np.random.default_rng(4)
    human = rng.integers(0, 10, 40).astype(float)  # ties, like rounded ratings
    a = human + rng.normal(0, 3, 40)
    b = human + rng.normal(0, 6, 40)
    d = paired_bootstrap(a, b, statistic("spearman"), n_resamples=300, seed=5, reference=human)
    idx = np.random.default_rng(5).integers(0, 40, size=(300, 40))  # the same draws, one chunk
    loop = [sps.spearmanr(a[i], human[i])[0] - sps.spearmanr(b[i], human[i])[0] for i in idx]
    assert d.diff == pytest.approx(sps.spearmanr(a, human)[0] - sps.spearmanr(b, human)[0])
    assert (d.lo, d.hi) == pytest.approx(tuple(np.percentile(loop, [2.5, 97.5])))


def test_auc_and_exp_mean_statistics():
    rng = np.random.default_rng(6)
    values = rng.normal(size=(3, 30)).round(1)  # ties
    labels = np.array([1.0] * 12 + [0.0] * 18)
    for row, got in zip(values, statistic("auc")(values, labels)):
        pos, neg = row[labels == 1], row[labels == 0]
        pairs = [(p > q) + 0.5 * (p == q) for p in pos for q in neg]
        assert got == pytest.approx(sum(pairs) / len(pairs))
    assert statistic("exp_mean")(np.log([[2.0, 8.0]]), None) == pytest.approx([4.0])


def test_seeds_are_pooled_by_averaging_their_metrics():
    rng = np.random.default_rng(7)
    a, b = rng.random((3, 20)), rng.random((1, 20))  # three seeds against one (e.g. the teacher)
    d = paired_bootstrap(a, b, statistic("exp_mean"), n_resamples=50)
    assert d.diff == pytest.approx(np.exp(a.mean(1)).mean() - np.exp(b.mean()))
    assert d.lo <= d.diff <= d.hi


def test_mismatched_items_are_refused():
    with pytest.raises(DSKDError, match="same items"):
        paired_bootstrap([1.0, 0.0], [1.0, 0.0, 1.0], MEAN)
    with pytest.raises(DSKDError, match="every seed must have the same items"):
        paired_bootstrap([[1.0, 0.0], [1.0]], [1.0, 0.0], MEAN)
    with pytest.raises(DSKDError, match="Unknown item statistic 'median'"):
        statistic("median")
