"""Summaries of an ablation: the table (Markdown + CSV), the plot (PNG), the manifest and the W&B report."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from dskd.core.errors import DSKDError
from dskd.core.io import atomic_path, write_json_atomic, write_text_atomic
from dskd.launch.ablate.results import TAIL_FRACTION, RunResult, collect
from dskd.launch.ablate.sweep import Point, Sweep
from dskd.tracking.session import wandb_online

CURVES = (
    "train/loss",
    "train/ce",
    "train/kd",
    "train/sense",
    "train/sense_pos",
    "train/sense_neg",
    "train/sense_rand",
)
"""Loss components drawn over steps (one panel each, one line per setting), in this order."""
FINALS = ("val/loss", "val/ce", "val/kd", "val/ppl", "val/top1_agreement")
"""Final metrics drawn as bars per setting (and listed in the table)."""


def setting_label(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in settings.items())


def table_rows(results: list[RunResult]) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows of the summary table: run, knobs, steps, then the final :data:`CURVES` and
    :data:`FINALS` metrics some run logged."""
    knobs = list(dict.fromkeys(k for r in results for k in r.settings))
    present = {k for r in results for k in r.finals}
    metrics = [m for m in (*CURVES, *FINALS) if m in present]
    header = ["run", *knobs, "steps", *metrics]
    rows = []
    for r in results:
        steps = max((s for pts in r.series.values() for s, _ in pts), default=None)
        row = {"run": r.name, **r.settings, "steps": steps}
        row.update({m: r.finals.get(m) for m in metrics})
        rows.append(row)
    return header, rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(results: list[RunResult]) -> str:
    """The summary table in Markdown (with a line saying how train/* and val/* are summarised)."""
    header, rows = table_rows(results)
    lines = [
        f"train/* = mean over the last {TAIL_FRACTION:.0%} of logged steps; val/* = final validation.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_cell(row.get(h)) for h in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(results: list[RunResult], out_dir: str | Path, title: str) -> tuple[Path, Path]:
    """``summary.md`` and ``summary.csv`` (one row per setting) in ``out_dir``."""
    md = Path(out_dir) / "summary.md"
    write_text_atomic(md, f"# {title}\n\n{markdown_table(results)}")
    header, rows = table_rows(results)
    csv_path = Path(out_dir) / "summary.csv"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return md, csv_path


def panels(results: list[RunResult]) -> tuple[list[str], list[str]]:
    """(curves, finals): the metrics drawn, those of :data:`CURVES` / :data:`FINALS` some run logged."""
    logged = {k for r in results for k in (*r.series, *r.finals)}
    return [m for m in CURVES if m in logged], [m for m in FINALS if m in logged]


def _smooth(values: list[float]) -> list[float]:
    w = max(1, len(values) // 20)
    return [
        sum(values[max(0, i - w + 1) : i + 1]) / len(values[max(0, i - w + 1) : i + 1])
        for i in range(len(values))
    ]


def plot(results: list[RunResult], path: str | Path, title: str) -> Path:
    """One PNG: a panel per loss component over steps (a line per setting), a bar panel per final metric."""
    # deferred: matplotlib is heavy and optional; only the plot needs it (headless backend first)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: after the backend is chosen

    curves, finals = panels(results)
    n = max(1, len(curves) + len(finals))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    labels = [setting_label(r.settings) or r.name for r in results]
    colors = plt.get_cmap("tab10")
    for ax, metric in zip(axes.flat, curves, strict=False):
        for i, r in enumerate(results):
            pts = r.series.get(metric, [])
            if pts:
                ax.plot(
                    [s for s, _ in pts], _smooth([v for _, v in pts]), color=colors(i % 10), label=labels[i]
                )
        ax.set_title(metric)
        ax.set_xlabel("step")
    for ax, metric in zip(axes.flat[len(curves) :], finals, strict=False):
        values = [r.finals.get(metric, math.nan) for r in results]
        ax.bar(range(len(results)), values, color=[colors(i % 10) for i in range(len(results))])
        ax.set_xticks(range(len(results)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"final {metric}")
    for ax in axes.flat[len(curves) + len(finals) :]:
        ax.axis("off")
    if curves:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_manifest(sweep: Sweep, points: list[Point], out_dir: str | Path) -> Path:
    """``ablation.json``: the sweep, and per point its settings, overrides and run folder."""
    path = Path(out_dir) / "ablation.json"
    write_json_atomic(
        path,
        {
            "sweep": str(sweep.path),
            "name": sweep.name,
            "group": points[0].cfg.preset if points else None,
            "knobs": sweep.knobs,
            "points": [
                {"settings": p.settings, "overrides": p.overrides, "run_dir": str(p.run_dir)} for p in points
            ],
        },
    )
    return path


def summarise(sweep: Sweep, points: list[Point], out_dir: str | Path) -> dict[str, str]:
    """Write the table, plot and manifest of the ablation; returns their paths."""
    results = collect(points)
    title = f"Ablation {sweep.name}: {' x '.join(sweep.knobs)}"
    md, csv_path = write_table(results, out_dir, title)
    png = plot(results, Path(out_dir) / "ablation.png", title)
    manifest = write_manifest(sweep, points, out_dir)
    return {"table": str(md), "csv": str(csv_path), "plot": str(png), "manifest": str(manifest)}


def default_out_dir(sweep: Sweep) -> Path:
    return Path("results") / "ablations" / sweep.name


STEP = "trainer/global_step"
"""The x axis of the curves: every run logs it (and uses it as W&B step), so resumed runs line up."""
EVAL_TABLES = ("eval/results", "eval/differences")
"""The tables an ``eval`` run of the group logs (:mod:`dskd.evaluation.wandb_results`): the results (mean ±
std over seeds) and the paired differences to the baseline with their 95% intervals."""


def build_report(sweep: Sweep, group: str, project: str, entity: str) -> Any:
    """A W&B report of the ablation group: the panels of :func:`plot` over ``trainer/global_step``, a
    parallel-coordinates view, and the results and difference tables of the group's evaluation (when it
    has one)."""
    try:
        import wandb_workspaces.reports.v2 as wr  # deferred: optional, only the online dashboard needs it
        from wandb_workspaces import expr  # deferred: as above
    except ImportError as e:
        raise DSKDError(
            "Creating a W&B dashboard needs the wandb-workspaces package: pip install wandb-workspaces."
        ) from e
    runset = wr.Runset(entity=entity, project=project, name=group, filters=[expr.Metric("Group") == group])
    curves = [wr.LinePlot(title=m, x=STEP, y=[m]) for m in CURVES]
    bars = [wr.BarPlot(title=f"final {m}", metrics=[m]) for m in FINALS]
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in sweep.knobs]
    columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(sweep.metric or "val/loss")))
    return wr.Report(
        project=project,
        entity=entity,
        title=f"DSKD ablation {sweep.name}",
        description=f"Grid over {', '.join(sweep.knobs)} (sweep file {sweep.path}).",
        blocks=[
            wr.H1(f"Ablation {sweep.name}"),
            wr.P(f"Knobs: {json.dumps(sweep.knobs)}. Group: {group}."),
            wr.PanelGrid(
                runsets=[runset], panels=[*curves, *bars, wr.ParallelCoordinatesPlot(columns=columns)]
            ),
            wr.H2("Evaluation"),
            wr.P(
                "The group's `dskd eval` run: the results (mean ± std over seeds) and the paired differences "
                "to the baseline with their 95% intervals."
            ),
            wr.PanelGrid(
                runsets=[runset], panels=[wr.WeavePanelSummaryTable(table_name=t) for t in EVAL_TABLES]
            ),
        ],
    )


def create_dashboard(sweep: Sweep, points: list[Point], out_dir: str | Path) -> str:
    """Save the W&B report of the ablation group and return its URL (needs W&B online)."""
    cfg = points[0].cfg
    if not wandb_online():
        local = Path(out_dir) / "summary.md"
        where = f"the local report {local} (plot {local.with_name('ablation.png')})"
        if not local.is_file():
            where += f", written by `dskd ablate {sweep.path}`"
        raise DSKDError(
            "W&B is offline (no WANDB_API_KEY, or WANDB_MODE=offline), so no dashboard was created. See "
            f"{where}. To get the dashboard: upload the runs with `wandb sync {cfg.runs_dir}/*/seed-*/wandb/"
            f"offline-run-*`, then rerun `dskd ablate {sweep.path} --dashboard` with WANDB_API_KEY set."
        )
    # deferred: wandb is an optional heavy library, needed only for the online dashboard
    import wandb

    entity = os.environ.get("WANDB_ENTITY") or wandb.Api().default_entity
    report = build_report(sweep, cfg.preset, cfg.logging.project, entity)
    report.save()
    return str(report.url)
