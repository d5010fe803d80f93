"""Paired bootstrap over items: a model's difference to a baseline on one metric, with a 95% interval.

Every model is scored on the same items in the same order (the suite builds them once), so a
metric's per-item values of two models are paired. A resample draws item indices with replacement
and applies the *same* indices to both models (and to every seed of each: the items are shared by
all seeds, so seeds are pooled by averaging each seed's metric on the resampled items). The
interval is the percentile interval of the resampled differences; a difference is significant when
its interval excludes 0.

A metric is recomputed from per-item values by a *statistic* (:data:`STATISTICS`): a mean
(accuracy, agreement, KL), the exponential of a mean (perplexity from per-block NLL), or a
statistic over all items with a per-item reference shared by every model (Spearman's rho with the
human ratings, AUC with the synonym/antonym labels), which is recomputed on each resample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata

from dskd.core.errors import DSKDError

Statistic = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
"""``(values, reference) -> metric`` over the last axis (items); leading axes are kept."""

CONFIDENCE = 0.95
"""Coverage of the percentile interval (the tables and docs report 95% intervals)."""
CHUNK_ELEMENTS = 4_000_000
"""Resampled values held in memory at once (resamples are drawn in chunks of this many elements)."""


def _mean(values: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    return values.mean(-1)


def _exp_mean(values: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    return np.exp(values.mean(-1))


def _spearman(values: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    rx = rankdata(values, axis=-1)
    ry = rankdata(reference, axis=-1)  # ranked once, broadcast over the seeds of ``values``
    rx -= rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))


def _auc(values: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    labels = np.broadcast_to(reference, values.shape)
    ranks = rankdata(values, axis=-1)
    n_pos = labels.sum(-1)
    n_neg = labels.shape[-1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * labels).sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


STATISTICS: dict[str, Statistic] = {
    "mean": _mean,
    "exp_mean": _exp_mean,
    "spearman": _spearman,
    "auc": _auc,
}
"""name -> statistic: ``mean`` of the item values; ``exp_mean``: exp of their mean (perplexity from
per-block NLL); ``spearman``: rank correlation of the values with the reference (human ratings);
``auc``: probability that a positive item (reference 1) scores above a negative one (reference 0)."""


def statistic(name: str) -> Statistic:
    """The statistic called ``name``; a DSKDError naming the known ones if none."""
    if name not in STATISTICS:
        raise DSKDError(f"Unknown item statistic '{name}'; use one of {', '.join(STATISTICS)}.")
    return STATISTICS[name]


class Difference(NamedTuple):
    """``a - b`` on the full items, and its percentile bootstrap interval."""

    diff: float
    lo: float
    hi: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return bool(self.lo > 0 or self.hi < 0)


def _seeds(items: np.ndarray | list, name: str) -> np.ndarray:
    try:
        array = np.asarray(items, dtype=float)
    except ValueError as e:  # rows of different lengths
        raise DSKDError(f"Bootstrap items of {name}: every seed must have the same items.") from e
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] == 0:
        raise DSKDError(f"Bootstrap items of {name} must be one list of item values per seed, all non-empty.")
    return array


def paired_bootstrap(
    a_items: np.ndarray | list,
    b_items: np.ndarray | list,
    metric_fn: Statistic,
    n_resamples: int = 2000,
    seed: int = 0,
    reference: np.ndarray | list | None = None,
) -> Difference:
    """Difference of ``metric_fn`` between model ``a`` and model ``b`` with a paired percentile interval.

    ``a_items``/``b_items``: per-item values, one row per seed (``[n_seeds, n_items]``, or one list
    for one seed); every row holds the same items in the same order. The metric of a model is the
    mean over its seeds of ``metric_fn(row, reference)``. Each of ``n_resamples`` resamples draws
    ``n_items`` indices with replacement (``numpy.random.default_rng(seed)``) and applies them to
    every row of both models and to ``reference``; the interval covers :data:`CONFIDENCE`.
    """
    a, b = _seeds(a_items, "model a"), _seeds(b_items, "model b")
    n = a.shape[1]
    if b.shape[1] != n:
        raise DSKDError(f"Paired bootstrap needs the same items for both models, got {n} and {b.shape[1]}.")
    ref = None if reference is None else np.asarray(reference, dtype=float)
    if ref is not None and ref.shape != (n,):
        raise DSKDError(f"The bootstrap reference must hold one value per item ({n}), got shape {ref.shape}.")
    if n_resamples < 1:
        raise DSKDError(f"The bootstrap needs at least one resample, got {n_resamples}.")

    def diff(idx: np.ndarray) -> np.ndarray:
        r = None if ref is None else ref[idx]
        return metric_fn(a[:, idx], r).mean(0) - metric_fn(b[:, idx], r).mean(0)

    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_ELEMENTS // (n * (len(a) + len(b))))
    resampled = np.concatenate(
        [
            diff(rng.integers(0, n, size=(min(chunk, n_resamples - start), n)))
            for start in range(0, n_resamples, chunk)
        ]
    )
    alpha = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.nanpercentile(resampled, [alpha, 100 - alpha])
    return Difference(float(diff(np.arange(n))), float(lo), float(hi))
