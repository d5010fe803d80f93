"""The record every benchmark returns: one number of one model, with the per-item values behind it.

results.json, the tables, the plots and the paired bootstrap are generic in these records.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Score:
    """One number of one model on one benchmark."""

    benchmark: str
    metric: str
    value: float
    n_items: int
    chance: float | None
    seconds: float
    in_average: bool = False
    higher_is_better: bool = True
    in_table: bool = True
    """False for secondary metrics kept only in results.json (acc_norm, cos_gap)."""
    items: list[float] | None = None
    """Per-item values in the benchmark's item order (the same for every model), from which
    ``statistic`` recomputes ``value``: the paired bootstrap of the difference table resamples them.
    None: no per-item values (no interval)."""
    statistic: str = "mean"
    """How ``value`` follows from ``items`` (a name in :data:`dskd.evaluation.stats.STATISTICS`)."""
    reference: list[float] | None = None
    """Per-item values shared by every model that ``statistic`` needs (human ratings for ``spearman``,
    1/0 synonym/antonym labels for ``auc``)."""
