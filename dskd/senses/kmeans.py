"""Batched k-means: many small clustering problems (one per key) solved at once on one device.

Keys are padded into ``[n_keys, max_rows, d]`` with a row mask. Initialisation is greedy k-means++
(as scikit-learn: ``2 + ln k`` candidates per step, the one lowering the potential most wins), then
Lloyd iterations; an empty cluster is moved to the row farthest from its centroid. A key with at
most ``k`` rows keeps its raw rows.
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


def _sq_dist(x: torch.Tensor, c: torch.Tensor, x_sq: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances [n, r, m] between rows x [n, r, d] (squared norms x_sq [n, r]) and centres
    c [n, m, d]."""
    d = (x @ c.transpose(1, 2)).mul_(-2).add_(x_sq.unsqueeze(-1)).add_((c * c).sum(-1).unsqueeze(1))
    return d.clamp_min_(0)


def _kmeans_pp(
    x: torch.Tensor, x_sq: torch.Tensor, mask: torch.Tensor, k: int, gen: torch.Generator
) -> torch.Tensor:
    """Greedy k-means++ seeding, batched over keys. Returns centres [n, k, d]."""
    n, r, _ = x.shape
    batch = torch.arange(n, device=x.device)
    trials = 2 + int(math.log(k))
    weights = mask.to(x.dtype)
    first = torch.multinomial(weights, 1, generator=gen).squeeze(1)
    centres = [x[batch, first]]
    closest = _sq_dist(x, centres[0].unsqueeze(1), x_sq).squeeze(2) * weights  # [n, r]
    for _ in range(1, k):
        pot = closest.sum(1, keepdim=True)
        probs = torch.where(pot > 0, closest / pot.clamp_min(1e-30), weights)  # all-duplicate keys: uniform
        cand = torch.multinomial(probs, trials, replacement=True, generator=gen)  # [n, trials]
        cand_x = x[batch.unsqueeze(1), cand]  # [n, trials, d]
        d_cand = _sq_dist(x, cand_x, x_sq).transpose(1, 2)  # [n, trials, r]
        new_closest = torch.minimum(closest.unsqueeze(1), d_cand) * weights.unsqueeze(1)
        best = new_closest.sum(2).argmin(1)
        closest = new_closest[batch, best]
        centres.append(cand_x[batch, best])
    return torch.stack(centres, 1)


def _update(x: torch.Tensor, mask: torch.Tensor, assign: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """Per-cluster row sums [n, k, d] and sizes [n, k] (padding rows excluded)."""
    n, r, d = x.shape
    slot = (assign + k * torch.arange(n, device=x.device).unsqueeze(1))[mask]
    sums = torch.zeros(n * k, d, dtype=x.dtype, device=x.device).index_add_(0, slot, x[mask])
    sizes = torch.bincount(slot, minlength=n * k).to(x.dtype)
    return sums.view(n, k, d), sizes.view(n, k)


def _relocate_empty(
    x: torch.Tensor, centres: torch.Tensor, sizes: torch.Tensor, row_dist: torch.Tensor
) -> torch.Tensor:
    """Move each empty cluster onto a distinct row far from its centroid (the e-th empty -> e-th farthest)."""
    empty = sizes == 0
    if not empty.any():
        return centres
    k = centres.shape[1]
    far = row_dist.topk(min(k, row_dist.shape[1]), dim=1).indices  # [n, k']
    rank = (empty.cumsum(1) - 1).clamp(0, far.shape[1] - 1)  # [n, k]
    rows = far.gather(1, rank)
    picked = x.gather(1, rows.unsqueeze(-1).expand(-1, -1, x.shape[2]))
    return torch.where(empty.unsqueeze(-1), picked, centres)


def kmeans_padded(
    x: torch.Tensor, mask: torch.Tensor, k: int, iters: int = 50, seed: int = 0, tol: float = 1e-4
) -> KMeansResult:
    """Cluster each key's rows: x [n, r, d] (padded), mask [n, r] (True for real rows).

    Computes in float32 (bf16 inputs are upcast). Keys with <= k rows keep their rows verbatim.
    A key stops once its centroids move by at most ``tol`` x its data variance (scikit-learn's rule)
    or its assignment repeats.
    """
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
    big = torch.nonzero(~raw).squeeze(1)
    if len(big):
        out[big], inertia[big] = _lloyd(x[big], mask[big], k, iters, seed, tol)
    return KMeansResult(out, nrows.clamp(max=k), inertia)


def _lloyd(
    x: torch.Tensor, mask: torch.Tensor, k: int, iters: int, seed: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ then Lloyd on keys with > k rows; a key stops once its centroids move <= tol x its
    variance or its assignment repeats (converged keys leave the working set). -> (centres, inertia)."""
    n, _, d = x.shape
    w = mask.unsqueeze(-1).to(x.dtype)
    x_sq = (x * x).sum(-1)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    centres = _kmeans_pp(x, x_sq, mask, k, gen)
    cnt = mask.sum(1).to(x.dtype)
    mean = (x * w).sum(1) / cnt.unsqueeze(-1)
    thresh = tol * (x_sq * w.squeeze(-1)).sum(1).sub_(cnt * (mean * mean).sum(-1)).div_(cnt * d)
    act = torch.arange(n, device=x.device)  # working set: keys still moving
    xa, ma, sqa, ca, tha = x, mask, x_sq, centres.clone(), thresh
    prev = torch.full(mask.shape, -1, dtype=torch.long, device=x.device)
    for _ in range(iters):
        min_d, assign = _sq_dist(xa, ca, sqa).min(2)
        sums, sizes = _update(xa, ma, assign, k)
        new = torch.where(sizes.unsqueeze(-1) > 0, sums / sizes.clamp_min(1).unsqueeze(-1), ca)
        new = _relocate_empty(xa, new, sizes, min_d.masked_fill(~ma, -1.0))
        moving = (((new - ca) ** 2).sum((1, 2)) > tha) & (assign != prev).any(1)
        centres[act] = new
        if not bool(moving.any()):
            break
        ca, prev = new, assign
        if int(moving.sum()) <= len(act) // 2:  # shrink the working set
            keep = torch.nonzero(moving).squeeze(1)
            act, xa, ma, sqa, ca, tha, prev = (t[keep] for t in (act, xa, ma, sqa, ca, tha, prev))
    min_d = _sq_dist(x, centres, x_sq).min(2).values
    return centres, (min_d * mask.to(x.dtype)).sum(1)


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
        yield keys, rows[idx] * mask.unsqueeze(-1).to(rows.dtype), mask
        i = j
