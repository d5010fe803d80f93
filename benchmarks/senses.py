"""Benchmark: batched k-means vs a per-key scikit-learn ``KMeans`` loop on the tiny preset's rows.

The baseline is how a per-key implementation does it: one ``KMeans(n_clusters=k, init="k-means++",
n_init=1)`` per key (n_init=1 for a like-for-like comparison with our single k-means++ run), with
the same iteration cap and tolerance. Both run in the same process on the same keys (those with more
than k rows); only keys with > k rows need clustering.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks.harness import Figure

TINY_CONFIG = "experiments/tiny/dskd.yaml"


def _tiny_rows(quick: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(counts [keys], rows grouped by key) the tiny preset's sense build kept (``senses.save_rows``)."""
    from benchmarks.artifacts import preset_artifacts
    from dskd.config.loading import load_config
    from dskd.senses.build import ROWS_FILE, load_rows

    cfg = preset_artifacts(load_config(TINY_CONFIG), quick)
    path = Path(cfg.senses.output_dir) / ROWS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the k-means benchmark needs senses.save_rows: true in {TINY_CONFIG}"
        )
    _, counts, rows = load_rows(path)
    return counts, rows, f"rows of the sense build over {cfg.senses.max_tokens} tokens"


def compare_kmeans(
    counts: torch.Tensor,
    rows: torch.Tensor,
    k: int,
    iters: int,
    max_keys: int,
    seed: int = 0,
    repeats: int = 3,
) -> dict[str, float]:
    """Time both implementations on up to ``max_keys`` keys with > k rows (a seeded random subset):
    one warm-up each, then ``repeats`` timed runs; the medians are reported."""
    import statistics
    import warnings

    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    from dskd.senses.kmeans import kmeans_padded, pad_groups

    starts = torch.cumsum(counts, 0) - counts
    big = torch.nonzero(counts > k).squeeze(1)
    gen = torch.Generator().manual_seed(seed)
    pick = big[torch.randperm(len(big), generator=gen)[:max_keys]].sort().values
    sub_counts = counts[pick]
    sub_rows = torch.cat([rows[starts[i] : starts[i] + counts[i]] for i in pick.tolist()]).float()
    sub_starts = torch.cumsum(sub_counts, 0) - sub_counts
    data = sub_rows.numpy()

    def ours() -> list[float]:
        inertia = torch.zeros(len(pick), dtype=torch.float64)
        for idx, x, mask in pad_groups(sub_rows, sub_counts):
            inertia[idx] = kmeans_padded(x, mask, k, iters=iters, seed=seed).inertia.double()
        return inertia.tolist()

    def sklearn() -> list[float]:
        out = []
        with warnings.catch_warnings():  # keys whose rows have < k distinct points warn
            warnings.simplefilter("ignore", ConvergenceWarning)
            for s, c in zip(sub_starts.tolist(), sub_counts.tolist(), strict=True):
                km = KMeans(k, init="k-means++", n_init=1, max_iter=iters, tol=1e-4, random_state=seed)
                out.append(km.fit(data[s : s + c]).inertia_)
        return out

    times: dict[str, list[float]] = {"ours": [], "sklearn": []}
    results = {}
    for name, fn in (("ours", ours), ("sklearn", sklearn)):  # one block each: sklearn's OpenMP
        for rep in range(repeats + 1):  # threads keep spinning after a fit and would slow torch
            t0 = time.perf_counter()
            results[name] = fn()
            if rep:  # the first run is the warm-up
                times[name].append(time.perf_counter() - t0)
    return {
        "keys": len(pick),
        "rows": int(sub_counts.sum()),
        "ours_s": statistics.median(times["ours"]),
        "sklearn_s": statistics.median(times["sklearn"]),
        "ours_inertia": float(np.mean(results["ours"])),
        "sklearn_inertia": float(np.mean(results["sklearn"])),
    }


def bench_kmeans(quick: bool) -> list[Figure]:
    from dskd.config.loading import load_config

    cfg = load_config(TINY_CONFIG)
    counts, rows, origin = _tiny_rows(quick)
    r = compare_kmeans(counts, rows, cfg.senses.k, cfg.senses.kmeans_iters, 200 if quick else 5000)
    note = (
        f"{r['keys']} keys with > k={cfg.senses.k} rows ({r['rows']} rows, d={rows.shape[1]}), {origin}; "
        f"torch threads {torch.get_num_threads()}; sklearn KMeans n_init=1 k-means++ per key; "
        "median of 3 runs after a warm-up"
    )
    speed = r["sklearn_s"] / r["ours_s"]
    ratio = r["ours_inertia"] / r["sklearn_inertia"]
    return [
        Figure(
            "senses: batched k-means time",
            r["ours_s"],
            "s",
            baseline=r["sklearn_s"],
            baseline_name="per-key sklearn KMeans loop",
            goal=">= 10x faster (ratio <= 0.1)",
            met=speed >= 10,
            note=f"{speed:.1f}x faster; {note}",
        ),
        Figure(
            "senses: batched k-means mean inertia",
            r["ours_inertia"],
            "sum sq. dist",
            baseline=r["sklearn_inertia"],
            baseline_name="per-key sklearn KMeans loop",
            goal="within 2% of sklearn (ratio <= 1.02)",
            met=ratio <= 1.02,
            note=note,
        ),
    ]


class PaddedDictionary:
    """The dense layout the sparse dictionary replaced (format version 1 in memory): every key's senses
    padded to k rows, ``centroids [keys, k, d]``, and a key -> row table (int64, -1 = no senses)."""

    def __init__(self, d) -> None:
        cents = torch.zeros(len(d), d.k, d.hidden_size, dtype=d.rows.dtype)
        cents[torch.arange(d.k) < d.counts.unsqueeze(1)] = d.rows
        self.centroids, self.counts, self.k = cents, d.counts.long(), d.k
        self.table = torch.full((int(d.meta["table_size"]),), -1, dtype=torch.long)
        self.table[d.key_ids] = torch.arange(len(d))

    @property
    def nbytes(self) -> int:
        return self.centroids.numel() * self.centroids.element_size() + 8 * len(self.table)

    def lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inside = (keys >= 0) & (keys < len(self.table))
        row = torch.where(inside, self.table[keys.clamp(0, len(self.table) - 1)], -1)
        found = row >= 0
        row = row.clamp_min(0).reshape(-1)
        senses = self.centroids.index_select(0, row).view(*keys.shape, self.k, -1)
        n = torch.where(found.reshape(-1), self.counts.index_select(0, row), 0).view(keys.shape)
        mask = torch.arange(self.k) < n.unsqueeze(-1)
        return senses.masked_fill(~mask.unsqueeze(-1), 0), mask


def paper_lookup_keys(key_ids: torch.Tensor, table_size: int, seed: int = 0) -> torch.Tensor:
    """The keys one step of the paper's sense loss looks up, batch 4: 25 P1 positions x (25 synonyms +
    the target) for C+ and as many for C-, plus 25 P2 targets, per sequence; 4 in 5 keys have senses."""
    gen = torch.Generator().manual_seed(seed)
    n = 4 * (25 * 26 * 2 + 25)
    known = key_ids[torch.randint(0, len(key_ids), (n,), generator=gen)]
    other = torch.randint(0, table_size, (n,), generator=gen)
    return torch.where(torch.rand(n, generator=gen) < 0.8, known, other)


def _median_seconds(fn, keys: torch.Tensor, repeats: int, sync) -> float:
    import statistics

    times = []
    for rep in range(repeats + 1):  # the first run is the warm-up
        t0 = time.perf_counter()
        fn(keys)
        sync()
        if rep:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare_lookups(d, keys: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds of one step's lookups, sparse vs padded (alternating blocks), and whether they agree."""
    padded = PaddedDictionary(d)
    same = all(torch.equal(a, b) for a, b in zip(d.lookup(keys), padded.lookup(keys), strict=True))
    times: dict[str, list[float]] = {"sparse": [], "padded": []}
    for _ in range(3):
        for name, fn in (("sparse", d.lookup), ("padded", padded.lookup)):
            times[name].append(_median_seconds(fn, keys, repeats, lambda: None))
    return {
        "sparse_s": min(times["sparse"]),
        "padded_s": min(times["padded"]),
        "same": same,
        "sparse_bytes": d.nbytes,
        "padded_bytes": padded.nbytes,
    }


def compare_placements(d, keys: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds of one step's lookups (keys and results on the GPU) with the senses on the GPU and
    in pinned host memory (``senses.device=cuda`` / ``pinned``)."""
    from dskd.senses.dictionary import SenseDictionary

    keys = keys.cuda()
    on_gpu = d.to("cuda")
    pinned = SenseDictionary(d.rows.pin_memory(), d.counts, d.key_ids, d.k, d.meta)
    return {
        name: _median_seconds(placed.lookup, keys, repeats, torch.cuda.synchronize)
        for name, placed in (("gpu_s", on_gpu), ("pinned_s", pinned))
    }


def bench_dictionary(quick: bool) -> list[Figure]:
    from benchmarks.artifacts import preset_artifacts
    from dskd.config.loading import load_config
    from dskd.senses.dictionary import SenseDictionary

    cfg = preset_artifacts(load_config(TINY_CONFIG), quick)
    d = SenseDictionary.load(cfg.senses.output_dir)
    keys = paper_lookup_keys(d.key_ids, int(d.meta["table_size"]))
    r = compare_lookups(d, keys, 5 if quick else 30)
    dense = int(d.meta["table_size"]) * d.k * d.hidden_size * d.rows.element_size()
    note = (
        f"the tiny preset's dictionary ({len(d)} keys, {len(d.rows)} senses, k={d.k}, d={d.hidden_size}, "
        f"{d.rows.dtype}); the V x k x d table the old estimate assumed: {dense / 1e6:.1f} MB"
    )
    look = (
        f"{len(keys)} keys (one paper-shaped step at batch 4), CPU, torch threads {torch.get_num_threads()}; "
        f"best of 3 alternating medians; results identical: {r['same']}"
    )
    figures = [
        Figure(
            "senses: dictionary bytes in memory",
            r["sparse_bytes"],
            "B",
            baseline=r["padded_bytes"],
            baseline_name="senses padded to k rows per key + int64 key table",
            goal="smaller (ratio < 1)",
            met=r["sparse_bytes"] < r["padded_bytes"],
            note=note,
        ),
        Figure(
            "senses: lookup time per step",
            r["sparse_s"],
            "s",
            baseline=r["padded_s"],
            baseline_name="padded dictionary lookup",
            goal="same senses, at most 1.5x the padded lookup's time",
            met=r["same"] and r["sparse_s"] <= 1.5 * r["padded_s"],
            note=look,
        ),
    ]
    if torch.cuda.is_available():
        p = compare_placements(d, keys, 5 if quick else 30)
        figures.append(
            Figure(
                "senses: lookup time per step, pinned host memory",
                p["pinned_s"],
                "s",
                baseline=p["gpu_s"],
                baseline_name="dictionary on the GPU",
                goal="informs senses.device=auto (GPU whenever the dictionary takes <= 25% of it)",
                note=f"{len(keys)} keys, keys and senses on {torch.cuda.get_device_name()}",
            )
        )
    return figures
