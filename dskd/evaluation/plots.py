"""PNG plots (matplotlib's Agg, no pyplot): scores per benchmark, and loss components over training."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from dskd.core.io import atomic_path
from dskd.evaluation.tables import aggregate, chance_row, columns


def _subplots(figsize: tuple[float, float], ncols: int = 1) -> tuple[Any, Any]:
    """A figure (no pyplot, so no GUI backend and no global figure list) and its axes, as a 2-D array."""
    # deferred: matplotlib takes 0.5 s to import and only the plots need it (eval.plot may be off)
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(1, ncols, squeeze=False)


def plot_scores(records: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars of the accuracy-like scores (error bars = std over seeds), chance as a black tick."""
    cols = [
        c
        for c in columns(records)
        if any(r["in_average"] for r in records if f"{r['benchmark']} {r['metric']}" == c)
    ]
    agg, chance = aggregate(records), chance_row(records)
    models = list(dict.fromkeys(r["model"] for r in records))
    width = 0.8 / max(1, len(models))
    fig, axes = _subplots((max(6.0, 1.2 * len(cols) + 2), 4))
    ax = axes[0][0]
    for i, m in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(cols))]
        means = [agg[m].get(c, (0.0, None))[0] for c in cols]
        stds = [agg[m].get(c, (0.0, None))[1] or 0.0 for c in cols]
        ax.bar(xs, means, width, yerr=stds, label=m, capsize=2)
    ax.hlines(
        [chance.get(c) or 0.0 for c in cols],
        [j - 0.4 for j in range(len(cols))],
        [j + 0.4 for j in range(len(cols))],
        colors="black",
        linestyles="dashed",
        label="chance",
    )
    ax.set_xticks(range(len(cols)), [c.replace(" ", "\n") for c in cols], fontsize=7)
    ax.set_ylabel("score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


THROUGHPUT_COUNTERS = ("train/time", "train/batches", "train/samples", "train/lengths")
"""Running totals that Lightning's ThroughputMonitor logs next to its rates (``*_per_sec``, ``device/*``)."""


def is_throughput(key: str) -> bool:
    """True for a ThroughputMonitor metric (rates, MFU, running totals): no loss component."""
    return key.startswith("train/device/") or key.endswith("_per_sec") or key in THROUGHPUT_COUNTERS


def read_metrics_csv(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Lightning CSV log -> ``{column: [(step, value), ...]}`` for every ``train/*`` column with values
    (throughput metrics aside)."""
    series: dict[str, list[tuple[float, float]]] = {}
    with Path(path).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            for key, value in row.items():
                wanted = key.startswith("train/") and not is_throughput(key)
                if wanted and value not in (None, "") and step not in (None, ""):
                    series.setdefault(key, []).append((float(step), float(value)))
    return series


def plot_losses(runs: dict[str, Path], path: Path) -> Path | None:
    """One panel per loss component (``train/*``) over steps, one line per run; None if no run logged any."""
    data = {name: read_metrics_csv(p) for name, p in runs.items()}
    keys = sorted({k for series in data.values() for k in series})
    if not keys:
        return None
    fig, axes = _subplots((3.2 * len(keys), 3), len(keys))
    for ax, key in zip(axes[0], keys):
        for name, series in data.items():
            if key in series:
                steps, values = zip(*series[key])
                ax.plot(steps, values, label=name)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path
