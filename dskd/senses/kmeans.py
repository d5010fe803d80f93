"""Batched k-means: many small clustering problems (one per key) solved at once on one device.

Keys are padded into ``[n_keys, max_rows, d]`` with a row mask. Initialisation is greedy k-means++
(as scikit-learn: ``2 + ln k`` candidates per step, the one lowering the potential most wins), then
Lloyd iterations; an empty cluster is moved to the row farthest from its centroid. A key with at
most ``k`` rows keeps its raw rows.

Centres are kept as weights over their key's rows (``W [n, r, k]``, a centre is ``W^T x``), so one
loop serves two geometries: for keys with few rows, everything runs on the Gram matrix ``x x^T``
(``[n, r, r]``, built once; no further pass over the hidden states), for keys with many rows on the
rows themselves. The result is the same k-means either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class KMeansResult:
    centroids: torch.Tensor
    """[n_keys, k, d]; rows beyond ``counts`` are zero."""
    counts: torch.Tensor
    """[n_keys] number of valid centroids (min(k, rows))."""
    inertia: torch.Tensor
    """[n_keys] sum of squared distances of the rows to their centroid (0 for raw keys)."""


def _sq_norm(x: torch.Tensor) -> torch.Tensor:
    """Squared L2 norms over the last dimension."""
    return torch.linalg.vector_norm(x, dim=-1).square_()


class _RowSpace:
    """Centres as vectors ``z = W^T x`` [n, k, d]; distances from the rows x [n, r, d]."""

    def __init__(self, x: torch.Tensor, x_sq: torch.Tensor | None = None):
        self.x = x
        self.x_sq = _sq_norm(x) if x_sq is None else x_sq

    def select(self, keep: torch.Tensor) -> _RowSpace:
        return _RowSpace(self.x.index_select(0, keep), self.x_sq.index_select(0, keep))

    def centres(self, w: torch.Tensor) -> torch.Tensor:
        return w.transpose(1, 2) @ self.x

    def dist(self, z: torch.Tensor) -> torch.Tensor:
        """Squared distances [n, k, r] (centres-major: ``z @ x^T`` is the fast layout on CPU)."""
        d = torch.baddbmm(self.x_sq.unsqueeze(1), z, self.x.transpose(1, 2), alpha=-2)
        return d.add_(_sq_norm(z).unsqueeze(-1)).clamp_min_(0)

    def shift(self, z_new: torch.Tensor, z_old: torch.Tensor) -> torch.Tensor:
        return _sq_norm(z_new - z_old).sum(1)


class _GramSpace:
    """Centres as their row weights ``z = W`` [n, r, k]; distances from the Gram matrix [n, r, r]."""

    def __init__(self, x: torch.Tensor | None = None, gram: torch.Tensor | None = None):
        self.gram = x @ x.transpose(1, 2) if gram is None else gram
        self.x_sq = self.gram.diagonal(dim1=1, dim2=2)

    def select(self, keep: torch.Tensor) -> _GramSpace:
        return _GramSpace(gram=self.gram.index_select(0, keep))

    def centres(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def _norms(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dots [n, k, r] of centres with rows, squared centre norms [n, k])."""
        wt = w.transpose(1, 2)
        dots = wt @ self.gram
        return dots, (dots * wt).sum(-1)

    def dist(self, z: torch.Tensor) -> torch.Tensor:
        dots, c_sq = self._norms(z)
        return dots.mul_(-2).add_(self.x_sq.unsqueeze(1)).add_(c_sq.unsqueeze(-1)).clamp_min_(0)

    def shift(self, z_new: torch.Tensor, z_old: torch.Tensor) -> torch.Tensor:
        return self._norms(z_new - z_old)[1].sum(1)


def _one_hot(index: torch.Tensor, r: int) -> torch.Tensor:
    """Row weights [n, r, t] selecting row ``index[:, j]`` for centre j (index [n, t])."""
    w = torch.zeros(index.shape[0], r, index.shape[1], device=index.device)
    return w.scatter_(1, index.unsqueeze(1), 1.0)


def _kmeans_pp(
    space: _RowSpace | _GramSpace, mask: torch.Tensor, k: int, gen: torch.Generator
) -> torch.Tensor:
    """Greedy k-means++ seeding, batched over keys. Returns the chosen rows [n, k]."""
    n, r = mask.shape
    batch = torch.arange(n, device=mask.device)
    trials = 2 + int(math.log(k))
    weights = mask.float()
    chosen = [torch.multinomial(weights, 1, generator=gen).squeeze(1)]
    closest = space.dist(space.centres(_one_hot(chosen[0].unsqueeze(1), r))).squeeze(1) * weights
    for _ in range(1, k):
        pot = closest.sum(1, keepdim=True)
        probs = torch.where(pot > 0, closest / pot.clamp_min(1e-30), weights)  # all-duplicate keys: uniform
        cand = torch.multinomial(probs, trials, replacement=True, generator=gen)  # [n, trials]
        d_cand = space.dist(space.centres(_one_hot(cand, r)))  # [n, trials, r]
        new_closest = torch.minimum(closest.unsqueeze(1), d_cand) * weights.unsqueeze(1)
        best = new_closest.sum(2).argmin(1)
        closest = new_closest[batch, best]
        chosen.append(cand[batch, best])
    return torch.stack(chosen, 1)


def _relocate_empty(w: torch.Tensor, sizes: torch.Tensor, row_dist: torch.Tensor) -> torch.Tensor:
    """Move each empty cluster onto a distinct row far from its centroid (the e-th empty -> e-th
    farthest): its weights become that row's one-hot."""
    empty = sizes == 0
    k = w.shape[2]
    far = row_dist.topk(min(k, row_dist.shape[1]), dim=1).indices  # [n, k']
    rank = (empty.cumsum(1) - 1).clamp(0, far.shape[1] - 1)  # [n, k]
    picked = _one_hot(far.gather(1, rank), w.shape[1])
    return torch.where(empty.unsqueeze(1), picked, w)


def kmeans_padded(
    x: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    iters: int = 50,
    seed: int = 0,
    tol: float = 1e-4,
    gram_max_rows: int | None = None,
) -> KMeansResult:
    """Cluster each key's rows: x [n, r, d] (padded), mask [n, r] (True for real rows).

    Computes in float32 (bf16 inputs are upcast). Keys with <= k rows keep their rows verbatim.
    A key stops once its centroids move by at most ``tol`` x its data variance (scikit-learn's rule)
    or its assignment repeats. Batches with r <= ``gram_max_rows`` (default 30 k, the CPU crossover)
    run on the Gram matrix, larger ones on the rows.

    Kernel: 7 parameters because it is a batched tensor routine with scikit-learn's ``KMeans`` knobs
    (``n_clusters``, ``max_iter``, ``random_state``, ``tol``) plus the layout crossover, each swept
    on its own by the tests and ``make bench``.
    """
    gram_max_rows = 30 * k if gram_max_rows is None else gram_max_rows
    n, r, d = x.shape
    x = x.float()
    mask = mask.bool()
    nrows = mask.sum(1)
    out = torch.zeros(n, k, d, dtype=x.dtype, device=x.device)
    inertia = torch.zeros(n, dtype=x.dtype, device=x.device)
    raw = nrows <= k
    if raw.any():
        kr = min(k, r)  # real rows are front-packed (see pad_groups)
        out[raw, :kr] = x[raw, :kr] * mask[raw, :kr].unsqueeze(-1)
    if not raw.any():  # every key needs clustering: no copy
        out, inertia = _lloyd(x, mask, k, iters, seed, tol, gram_max_rows)
    elif not raw.all():
        big = torch.nonzero(~raw).squeeze(1)
        out[big], inertia[big] = _lloyd(x[big], mask[big], k, iters, seed, tol, gram_max_rows)
    return KMeansResult(out, nrows.clamp(max=k), inertia)


def _lloyd(
    x: torch.Tensor, mask: torch.Tensor, k: int, iters: int, seed: int, tol: float, gram_max_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ then Lloyd on keys with > k rows (padding values ignored); a key stops once its
    centroids move <= tol x its variance or its assignment repeats (converged keys leave the working
    set). -> (centres [n, k, d], inertia [n]).

    Kernel: 7 parameters because it takes :func:`kmeans_padded`'s, resolved, on the keys to cluster."""
    n, r, d = x.shape
    space = _GramSpace(x) if r <= gram_max_rows else _RowSpace(x)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    fmask = mask.to(x.dtype)
    cnt = fmask.sum(1)
    to_mean = space.dist(space.centres((fmask / cnt.unsqueeze(-1)).unsqueeze(-1))).squeeze(1)
    thresh = tol * (to_mean * fmask).sum(1) / (cnt * d)  # tol x mean per-feature variance
    w_all = _one_hot(_kmeans_pp(space, mask, k, gen), r)
    act = torch.arange(n, device=x.device)  # working set: keys still moving
    sp, w, z, fm, th, prev = space, w_all, space.centres(w_all), fmask, thresh, None
    for _ in range(iters):
        score, assign = sp.dist(z).min(1)  # [n, r]
        w_new = torch.zeros_like(w).scatter_(2, assign.unsqueeze(-1), fm.unsqueeze(-1))
        sizes = w_new.sum(1)  # [n, k]
        w_new /= sizes.clamp_min(1).unsqueeze(1)
        if bool((sizes == 0).any()):
            w_new = _relocate_empty(w_new, sizes, score.masked_fill(fm == 0, -1.0))
        z_new = sp.centres(w_new)
        moving = sp.shift(z_new, z) > th
        if prev is not None:
            moving &= (assign != prev).any(1)
        w, z, prev, n_moving = w_new, z_new, assign, int(moving.sum())
        if n_moving == 0:
            break
        if n_moving <= len(act) // 2:  # shrink the working set
            w_all.index_copy_(0, act, w)
            keep = torch.nonzero(moving).squeeze(1)
            act, w, z, fm, th, prev = (t.index_select(0, keep) for t in (act, w, z, fm, th, prev))
            sp = sp.select(keep)
    w_all.index_copy_(0, act, w)
    inertia = (space.dist(space.centres(w_all)).min(1).values * fmask).sum(1)
    return w_all.transpose(1, 2) @ x, inertia


def pad_groups(
    rows: torch.Tensor, counts: torch.Tensor, max_elements: int = 1 << 26, growth: float = 1.25
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Split key-sorted rows into padded batches of keys with similar row counts.

    rows [N, d] are grouped by key (counts [n_keys] rows each, in order). Yields
    (key_indices [b], x [b, max_rows, d], mask [b, max_rows]) with b * max_rows * d <= max_elements
    (at least one key per batch) and max_rows <= growth x the batch's smallest count (little padding).
    """
    d = rows.shape[1]
    starts = torch.cumsum(counts, 0) - counts
    order = torch.argsort(counts, stable=True)
    sizes = counts[order].tolist()
    i, n = 0, len(sizes)
    while i < n:
        j = i + 1
        while j < n and (j + 1 - i) * sizes[j] * d <= max_elements and sizes[j] <= growth * sizes[i] + 1:
            j += 1
        keys = order[i:j]
        offs = torch.arange(sizes[j - 1], device=rows.device)
        mask = offs.unsqueeze(0) < counts[keys].unsqueeze(1)
        idx = (starts[keys].unsqueeze(1) + offs).clamp(max=rows.shape[0] - 1)
        x = rows.index_select(0, idx.view(-1)).view(len(keys), -1, d)
        yield keys, x.masked_fill_(~mask.unsqueeze(-1), 0), mask
        i = j
