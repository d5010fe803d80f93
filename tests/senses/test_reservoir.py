"""The mergeable reservoir: uniform sampling, exact merges, per-key caps."""

import torch
from scipy.stats import chisquare

from dskd.senses.reservoir import KeyedReservoir


def _offer(res: KeyedReservoir, keys: torch.Tensor, gen: torch.Generator, start: int = 0) -> None:
    """Offer rows whose single feature is their global index, in chunks (exercises thresholds)."""
    for s in range(0, len(keys), 7):
        k = keys[s : s + 7]
        rows = torch.arange(start + s, start + s + len(k), dtype=torch.float32).unsqueeze(1)
        res.add(k, rows, torch.rand(len(k), generator=gen, dtype=torch.float64))


def test_each_item_is_kept_with_equal_probability():
    n, cap, trials = 40, 5, 4000
    gen = torch.Generator().manual_seed(0)
    hits = torch.zeros(n)
    keys = torch.zeros(n, dtype=torch.long)
    for _ in range(trials):
        res = KeyedReservoir(cap, compact_every=8)
        _offer(res, keys, gen)
        _, counts, rows = res.grouped()
        assert counts.tolist() == [cap]
        hits[rows.squeeze(1).long()] += 1
    expected = trials * cap / n
    assert chisquare(hits.numpy(), [expected] * n).pvalue > 1e-3
    # and a biased sampler (always the first `cap`) is rejected by the same test
    biased = torch.zeros(n)
    biased[:cap] = trials
    assert chisquare(biased.numpy(), [expected] * n).pvalue < 1e-6


def test_caps_per_key_and_keeps_everything_under_the_cap():
    gen = torch.Generator().manual_seed(1)
    keys = torch.tensor([3] * 10 + [7] * 2 + [0] * 4)
    res = KeyedReservoir(4, compact_every=3)
    _offer(res, keys, gen)
    uniq, counts, rows = res.grouped()
    assert uniq.tolist() == [0, 3, 7] and counts.tolist() == [4, 4, 2]
    assert sorted(rows[8:].squeeze(1).tolist()) == [10.0, 11.0]
    assert set(rows[:4].squeeze(1).tolist()) == {12.0, 13.0, 14.0, 15.0}
    assert set(rows[4:8].squeeze(1).tolist()) <= set(range(10))


def test_merge_of_shards_equals_one_pass():
    gen = torch.Generator().manual_seed(2)
    keys = torch.randint(0, 6, (300,))
    prio = torch.rand(300, generator=gen, dtype=torch.float64)
    rows = torch.arange(300, dtype=torch.float32).unsqueeze(1)
    whole = KeyedReservoir(8, compact_every=16)
    whole.add(keys, rows, prio)
    a, b = KeyedReservoir(8, compact_every=16), KeyedReservoir(8, compact_every=16)
    for s in range(0, 300, 10):  # interleaved shards, as ranks read every world-th document
        (a if (s // 10) % 2 == 0 else b).add(keys[s : s + 10], rows[s : s + 10], prio[s : s + 10])
    a.merge(b)
    for x, y in zip(whole.grouped(), a.grouped(), strict=True):
        assert torch.equal(x, y)
    # a larger overall cap over two sources keeps all rows of both
    total = KeyedReservoir(100)
    total.merge(whole)
    total.merge(a)
    assert len(total) == 2 * len(whole)
