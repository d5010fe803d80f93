"""PNG plots (matplotlib's Agg, no pyplot): scores per benchmark, and the training curves.

Every figure gives each run (model) one colour in all its panels and has one legend, above the panels.
``scores.png`` draws the intervals table.md reports: the std over seeds on the scores (where a model has
several seeds), and each model's difference to the baseline with its 95% paired-bootstrap interval.
The training curves are two figures of at most :data:`GRID_COLUMNS` panels a row: ``losses.png`` (the loss
components) and ``diagnostics.png`` (learning rate, gradient norm, skipped steps, sense diagnostics).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from dskd.core.io import atomic_path
from dskd.evaluation.stats import Difference
from dskd.evaluation.tables import aggregate, chance_row, columns

DPI = 120
GRID_COLUMNS = 4
PANEL = (3.6, 2.7)
"""Inches of one curve panel: four a row make a figure 1,728 px wide at :data:`DPI`."""
LOSSES = ("train/loss", "train/ce", "train/kd")
"""Loss components besides the sense terms (``train/sense*``, but ``train/sense_diag/*``)."""


def _matplotlib() -> tuple[Any, Any, Any]:
    """matplotlib's ``Figure``, ``colormaps`` and ``Patch`` (no pyplot: no GUI backend or figure list)."""
    # deferred: matplotlib takes 0.5 s to import and only the plots need it (eval.plot may be off)
    from matplotlib import colormaps, figure, patches

    return figure.Figure, colormaps, patches.Patch


def _figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1) -> tuple[Any, list[Any]]:
    """A figure with a grid of axes, row-major."""
    fig = _matplotlib()[0](figsize=figsize, layout="constrained")
    return fig, list(fig.subplots(nrows, ncols, squeeze=False).flat)


def run_colours(names: list[str]) -> dict[str, Any]:
    """One colour per run (matplotlib's tab10, then tab20), in the order given."""
    cmap = _matplotlib()[1]["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _legend(fig: Any, colours: dict[str, Any], extra: list[tuple[Any, str]] = ()) -> None:
    """The figure's one legend, above its panels: a patch per run, then ``extra`` (handle, label)."""
    Patch = _matplotlib()[2]
    handles = [Patch(color=c, label=name) for name, c in colours.items()]
    for handle, label in extra:
        handle.set_label(label)
        handles.append(handle)
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 6), fontsize=8)


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _plotted_columns(records: list[dict[str, Any]]) -> list[str]:
    """The accuracy-like columns (those in the average): one scale, 0 to 1."""
    averaged = {f"{r['benchmark']} {r['metric']}" for r in records if r["in_average"]}
    return [c for c in columns(records) if c in averaged]


def _offsets(n: int) -> tuple[float, list[float]]:
    """Bar width and each of ``n`` models' offset from its column's centre."""
    width = 0.8 / max(1, n)
    return width, [(i - (n - 1) / 2) * width for i in range(n)]


Differences = dict[str, dict[str, Difference]]
"""model -> column -> difference to the baseline (:func:`dskd.evaluation.tables.differences`)."""


def scores_figure(records: list[dict[str, Any]], diffs: Differences | None = None) -> Any:
    """The figure of :func:`plot_scores`."""
    cols = _plotted_columns(records)
    agg, chance = aggregate(records), chance_row(records)
    models = list(dict.fromkeys(r["model"] for r in records))
    colours = run_colours(models)
    diff_models = [m for m in models if any(c in (diffs or {}).get(m, {}) for c in cols)]
    panel_w = max(5.0, 1.0 * len(cols) + 2)
    fig, axes = _figure((panel_w * (2 if diff_models else 1), 4.2), 1, 2 if diff_models else 1)
    width, offsets = _offsets(len(models))
    ax = axes[0]
    for m, off in zip(models, offsets):
        xs = [j + off for j in range(len(cols))]
        means = [agg[m].get(c, (math.nan, None))[0] for c in cols]
        stds = [agg[m].get(c, (0.0, None))[1] for c in cols]
        yerr = [s if s is not None else math.nan for s in stds] if any(s is not None for s in stds) else None
        ax.bar(xs, means, width, yerr=yerr, color=colours[m], capsize=2)
    chance_line = ax.hlines(
        [chance.get(c) if chance.get(c) is not None else math.nan for c in cols],
        [j - 0.4 for j in range(len(cols))],
        [j + 0.4 for j in range(len(cols))],
        colors="black",
        linestyles="dashed",
    )
    ax.set_xticks(range(len(cols)), [c.replace(" ", "\n") for c in cols], fontsize=7)
    ax.set_ylabel("score (error bar: std over seeds)", fontsize=8)
    ax.set_title("scores", fontsize=9)
    if diff_models:
        _differences_panel(axes[1], cols, {m: diffs[m] for m in diff_models}, colours, records)
    _legend(fig, colours, [(chance_line, "chance")])
    return fig


def _differences_panel(
    ax: Any,
    cols: list[str],
    diffs: Differences,
    colours: dict[str, Any],
    records: list[dict[str, Any]],
) -> None:
    """Each model's difference to the baseline per column, with its 95% paired-bootstrap interval."""
    baseline = next((r["model"] for r in records if r["model"] not in diffs), "baseline")
    _, offsets = _offsets(len(diffs))
    for (m, by_col), off in zip(diffs.items(), offsets):
        shown = [(j, by_col[c]) for j, c in enumerate(cols) if c in by_col]
        xs = [j + off for j, _ in shown]
        ys = [d.diff for _, d in shown]
        err = [[d.diff - d.lo for _, d in shown], [d.hi - d.diff for _, d in shown]]
        ax.errorbar(xs, ys, yerr=err, fmt="o", color=colours[m], capsize=3, markersize=4)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(cols)), [c.replace(" ", "\n") for c in cols], fontsize=7)
    ax.set_ylabel("difference (95% paired-bootstrap interval)", fontsize=8)
    ax.set_title(f"difference to {baseline}", fontsize=9)


def plot_scores(records: list[dict[str, Any]], path: Path, diffs: Differences | None = None) -> Path:
    """Grouped bars of the accuracy-like scores (error bars: std over seeds), chance as a dashed tick; and,
    with ``diffs`` (:func:`dskd.evaluation.tables.differences`), a panel of each model's difference to the
    baseline with its 95% paired-bootstrap interval."""
    return _save(scores_figure(records, diffs), path)


THROUGHPUT_COUNTERS = ("train/time", "train/batches", "train/samples", "train/lengths")
"""Running totals that Lightning's ThroughputMonitor logs next to its rates (``*_per_sec``, ``device/*``)."""


def is_throughput(key: str) -> bool:
    """True for a ThroughputMonitor metric (rates, MFU, running totals): no loss component."""
    return key.startswith("train/device/") or key.endswith("_per_sec") or key in THROUGHPUT_COUNTERS


def is_loss(key: str) -> bool:
    """True for a loss component (``train/loss``, ``ce``, ``kd``, ``sense*``); the other ``train/*`` values
    (lr, grad_norm, skipped steps, ``sense_diag/*``, ...) are diagnostics."""
    return key in LOSSES or (key.startswith("train/sense") and not key.startswith("train/sense_diag/"))


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


def curves_figure(data: dict[str, dict[str, list[tuple[float, float]]]], keys: list[str]) -> Any:
    """One panel per key of ``keys`` over steps (a grid of at most :data:`GRID_COLUMNS` a row), one line
    per run of ``data`` (run -> key -> points), in the run's colour."""
    ncols = min(GRID_COLUMNS, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = _figure((PANEL[0] * ncols, PANEL[1] * nrows + 0.4), nrows, ncols)
    colours = run_colours(list(data))
    for ax, key in zip(axes, keys):
        for name, series in data.items():
            if key in series:
                steps, values = zip(*series[key])
                ax.plot(
                    steps, values, color=colours[name], label=name, marker="." if len(steps) < 20 else None
                )
        ax.set_title(key.removeprefix("train/"), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    _legend(fig, colours)
    return fig


def plot_losses(runs: dict[str, Path], path: Path, diagnostics: Path | None = None) -> Path | None:
    """The loss components (``train/*``, :func:`is_loss`) of each run's metrics.csv over steps in ``path``,
    the other ``train/*`` values in ``diagnostics`` (when given and logged); None if no run logged a loss."""
    data = {name: read_metrics_csv(p) for name, p in runs.items()}
    keys = sorted({k for series in data.values() for k in series})
    losses = [k for k in LOSSES if k in keys] + [k for k in keys if is_loss(k) and k not in LOSSES]
    others = [k for k in keys if not is_loss(k)]
    if diagnostics is not None and others:
        _save(curves_figure(data, others), diagnostics)
    return _save(curves_figure(data, losses), path) if losses else None
