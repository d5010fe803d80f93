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
