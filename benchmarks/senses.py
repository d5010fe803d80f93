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
    """(counts [keys], rows grouped by key) of the tiny preset: the saved rows.safetensors if the
    build kept them (senses.save_rows=true), else gathered again with the same reservoir settings."""
    from dskd.config import load_config
    from dskd.senses.build import ROWS_FILE, gather_from_config, load_rows, overall_sample

    cfg = load_config(TINY_CONFIG)
    path = Path(cfg.senses.output_dir) / ROWS_FILE
    if path.is_file():
        _, counts, rows = load_rows(path)
        return counts, rows, f"rows from {path}"
    from dskd.models.loading import load_causal_lm, load_tokenizer

    tok = load_tokenizer(cfg.teacher.model)
    model = load_causal_lm(cfg.teacher.model, dtype=cfg.teacher.dtype).requires_grad_(False)
    res = gather_from_config(cfg, model, tok, max_tokens=20_000 if quick else None)
    _, counts, rows = overall_sample(res, cfg.senses.max_rows_per_key).grouped()
    return counts, rows, f"rows regathered over {res.tokens} tokens"


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
    from dskd.config import load_config

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
