"""The ``eval`` W&B run of ``dskd eval``: in the experiment's group, next to the training runs, it holds
numeric tables that sort and plot in W&B (:func:`numeric_tables`): ``eval/results`` (a row per model, a
column per benchmark metric with its mean over seeds and one with the std), ``eval/differences`` (the
difference to the baseline and the bounds of its 95% interval, a column each, when there are any) and
``eval/benchmarks`` (a row per benchmark metric: chance, items, direction); one summary metric per model
and benchmark metric (``MODEL/BENCHMARK/METRIC``, mean over seeds, ``_std`` beside it), the PNG plots
(``eval/scores``, ``eval/losses``, ``eval/diagnostics``), the tasks left out for want of their asset
(config ``unavailable``, ``task -> reason``; their cells are empty), and the lineage: the students it
scored as inputs, the result files (results.json, table.md, table.csv, plots) as its output artifact."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dskd.evaluation.config import EvalConfig
from dskd.evaluation.tables import AVERAGE, aggregate, chance_row, columns, differences, item_counts
from dskd.tracking.artifacts import student_artifact, use
from dskd.tracking.session import finish_wandb, wandb_online

RESULT_FILES = ("results.json", "table.md", "table.csv", "scores.png", "losses.png", "diagnostics.png")


@dataclass(frozen=True)
class EvalRun:
    """Where the ``eval`` W&B run goes and what it records (from ``logging:`` and the preset)."""

    project: str
    group: str
    """The preset: the eval run sits in the group of its training runs."""
    tags: list[str]
    artifacts: str
    """logging.artifacts: reference | upload | off."""


def summary_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """``MODEL/BENCHMARK/METRIC`` -> mean over seeds (and ``..._std`` with several seeds)."""
    out: dict[str, float] = {}
    for model, by_column in aggregate(records).items():
        for column, (mean, std) in by_column.items():
            key = f"{model}/{column.replace(' ', '/')}"
            out[key] = mean
            if std is not None:
                out[f"{key}_std"] = std
    return out


Table = tuple[list[str], list[list[Any]]]
"""Header and rows of a ``wandb.Table``: str (names), float, int, bool or None (no value) cells."""


def results_table(records: list[dict[str, Any]], order: list[str], unavailable: dict[str, str]) -> Table:
    """A row per model (in ``order``): ``seeds``, then per benchmark metric (and ``average``) its mean over
    seeds and ``... std`` (None with one seed; both None for an ``unavailable`` task)."""
    shown = [r for r in records if r.get("in_table", True)]
    cols = [*columns(shown), *unavailable, *([AVERAGE] if any(r["in_average"] for r in shown) else [])]
    agg = aggregate(shown)
    header = ["model", "seeds"] + [h for c in cols for h in (c, f"{c} std")]
    rows = []
    for m in (m for m in order if m in agg):
        seeds = len({r["seed"] for r in shown if r["model"] == m})
        cells = [agg[m].get(c, (None, None)) for c in cols]
        rows.append([m, seeds, *(v for cell in cells for v in cell)])
    return header, rows


def differences_table(records: list[dict[str, Any]], order: list[str], ec: EvalConfig) -> Table:
    """A row per model with a difference to ``ec.baseline``: per benchmark metric the difference and the
    ``lo`` and ``hi`` bounds of its 95% paired-bootstrap interval (None where there is none)."""
    diffs = differences(records, ec.baseline, ec.bootstrap_resamples, ec.bootstrap_seed)
    cols = [c for c in columns(records) if any(c in d for d in diffs.values())]
    header = ["model"] + [h for c in cols for h in (c, f"{c} lo", f"{c} hi")]
    none = (None, None, None)
    rows = [
        [m, *(v for c in cols for v in (tuple(map(float, diffs[m][c])) if c in diffs[m] else none))]
        for m in order
        if m in diffs
    ]
    return header, rows


def benchmarks_table(records: list[dict[str, Any]]) -> Table:
    """A row per benchmark metric: its chance level (None: none), items, and whether higher is better."""
    chance, counts = chance_row(records), item_counts(records)
    better = {f"{r['benchmark']} {r['metric']}": bool(r["higher_is_better"]) for r in records}
    header = ["metric", "chance", "items", "higher_is_better"]
    return header, [[c, chance.get(c), counts[c], better[c]] for c in columns(records)]


def numeric_tables(
    ec: EvalConfig, records: list[dict[str, Any]], order: list[str], unavailable: dict[str, str]
) -> dict[str, Table]:
    """``eval/results``, ``eval/differences`` (when there are any) and ``eval/benchmarks``."""
    tables = {"eval/results": results_table(records, order, unavailable)}
    diff = differences_table(records, order, ec)
    if diff[1]:
        tables["eval/differences"] = diff
    tables["eval/benchmarks"] = benchmarks_table(records)
    return tables


def log_evaluation(
    ec: EvalConfig,
    target: EvalRun,
    records: list[dict[str, Any]],
    models: dict[str, str],
    order: list[str],
    unavailable: dict[str, str] | None = None,
) -> None:
    """Log the evaluation in ``ec.output_dir`` as the ``eval`` W&B run ``target`` (offline unless W&B is
    online)."""
    # deferred: wandb (heavy, imported only when a run logs to W&B)
    import wandb

    out_dir = Path(ec.output_dir)
    tables = {
        key: wandb.Table(columns=header, data=rows)
        for key, (header, rows) in numeric_tables(ec, records, order, unavailable or {}).items()
    }
    run = wandb.init(
        project=target.project,
        group=target.group,
        job_type="eval",
        name=f"eval-{target.group}",
        tags=["eval", *target.tags],
        dir=str(out_dir),
        mode="online" if wandb_online() else "offline",
        config={"eval": asdict(ec), "models": models, "unavailable": unavailable or {}},
    )
    try:
        plots = {
            f"eval/{p.stem}": wandb.Image(str(p))
            for p in map(out_dir.joinpath, RESULT_FILES[3:])
            if p.is_file()
        }
        run.log({**tables, **plots})
        run.summary.update(summary_metrics(records))
        if target.artifacts != "off":
            for path in models.values():
                if (Path(path) / "export_meta.json").is_file():
                    use(run, student_artifact(path, target.artifacts))
            results = wandb.Artifact(
                f"{target.group}-results", type="evaluation", metadata={"models": models}
            )
            for name in RESULT_FILES:
                if (out_dir / name).is_file():
                    results.add_file(str(out_dir / name))
            run.log_artifact(results)
    finally:
        finish_wandb()
