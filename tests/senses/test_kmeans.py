"""Batched k-means against scikit-learn's KMeans."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from dskd.senses.kmeans import kmeans_padded, pad_groups


def _sklearn_inertia(rows: np.ndarray, k: int) -> float:
    return KMeans(k, n_init=1, init="k-means++", random_state=0).fit(rows).inertia_


GEOMETRIES = pytest.mark.parametrize("gram_max_rows", [0, 10**6], ids=["rows", "gram"])


@GEOMETRIES
def test_mean_inertia_matches_sklearn_on_random_keys(gram_max_rows):
    gen = torch.Generator().manual_seed(0)
    n, r, d, k = 60, 40, 16, 5
    x = torch.randn(n, r, d, generator=gen)
    counts = torch.randint(k + 1, r + 1, (n,), generator=gen)
    mask = torch.arange(r) < counts[:, None]
    res = kmeans_padded(x * mask[..., None], mask, k, iters=100, seed=0, gram_max_rows=gram_max_rows)
    ours = res.inertia.numpy()
    ref = np.array([_sklearn_inertia(x[i, : counts[i]].numpy(), k) for i in range(n)])
    assert abs(ours.mean() / ref.mean() - 1) < 0.02
    # the reported inertia is the true one of the returned centroids
    i = 3
    rows = x[i, : counts[i]]
    true = torch.cdist(rows, res.centroids[i]).pow(2).min(1).values.sum()
    assert torch.allclose(res.inertia[i], true, rtol=1e-4)
    assert res.counts.tolist() == [k] * n


def test_well_separated_blobs_give_sklearns_partition():
    gen = torch.Generator().manual_seed(1)
    k, per, d = 4, 15, 8
    keys = []
    for _ in range(5):
        centres = torch.randn(k, d, generator=gen) * 20
        keys.append(centres.repeat_interleave(per, 0) + 0.1 * torch.randn(k * per, d, generator=gen))
    x = torch.stack(keys)
    res = kmeans_padded(x, torch.ones(x.shape[:2], dtype=torch.bool), k, seed=0)
    for i in range(len(keys)):
        ours = torch.cdist(x[i], res.centroids[i]).argmin(1).numpy()
        ref = KMeans(k, n_init=1, random_state=0).fit(x[i].numpy()).labels_
        assert adjusted_rand_score(ours, ref) == pytest.approx(1.0)


def test_small_keys_keep_their_rows_and_padding_is_zero():
    x = torch.arange(2 * 6 * 2, dtype=torch.float32).view(2, 6, 2)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    res = kmeans_padded(x, mask, k=3, seed=0)
    assert res.counts.tolist() == [2, 3]
    assert torch.equal(res.centroids[0, :2], x[0, :2])
    assert torch.equal(res.centroids[0, 2], torch.zeros(2))
    assert res.inertia[0] == 0


@GEOMETRIES
def test_duplicate_rows_do_not_break_the_init_or_leave_nan(gram_max_rows):
    x = torch.ones(1, 8, 3)
    x[0, 4:] = 2.0  # only two distinct rows for k = 3: one cluster must be empty and get relocated
    res = kmeans_padded(x, torch.ones(1, 8, dtype=torch.bool), k=3, seed=0, gram_max_rows=gram_max_rows)
    assert torch.isfinite(res.centroids).all()
    assert res.inertia[0] == pytest.approx(0.0, abs=1e-5)


def test_pad_groups_covers_every_key_once_with_its_rows():
    counts = torch.tensor([3, 1, 5, 2])
    rows = torch.arange(int(counts.sum()), dtype=torch.float32).unsqueeze(1)
    starts = torch.cumsum(counts, 0) - counts
    seen = []
    for keys, x, mask in pad_groups(rows, counts, max_elements=6):
        for j, key in enumerate(keys.tolist()):
            c = int(counts[key])
            assert torch.equal(x[j, :c, 0], rows[starts[key] : starts[key] + c, 0])
            assert mask[j].sum() == c and not x[j, c:].any()
            seen.append(key)
    assert sorted(seen) == [0, 1, 2, 3]


def test_gram_and_row_geometries_give_the_same_clustering():
    """The Gram-matrix path is the same k-means as the row path, padding values notwithstanding."""
    gen = torch.Generator().manual_seed(2)
    n, r, d, k = 30, 50, 24, 5
    x = torch.randn(n, r, d, generator=gen) + 4 * torch.randn(n, 1, d, generator=gen)
    counts = torch.randint(k + 1, r + 1, (n,), generator=gen)
    mask = torch.arange(r) < counts[:, None]
    x = torch.where(mask[..., None], x, torch.full_like(x, 1e3))  # junk padding must not matter
    rows = kmeans_padded(x, mask, k, seed=3, gram_max_rows=0)
    gram = kmeans_padded(x, mask, k, seed=3, gram_max_rows=r)
    assert torch.allclose(rows.centroids, gram.centroids, atol=1e-3)
    assert torch.allclose(rows.inertia, gram.inertia, rtol=1e-4)
