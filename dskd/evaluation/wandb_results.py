"""The ``eval`` W&B run of ``dskd eval``: in the experiment's group, next to the training runs, it holds
the results table (``eval/results``, a ``wandb.Table`` like table.md; ``eval/differences``, the differences
to the baseline with their 95% intervals, when there are any), one summary metric per model and
benchmark metric (``MODEL/BENCHMARK/METRIC``, mean over seeds, ``_std`` beside it), the PNG plots
(``eval/scores``, ``eval/losses``, ``eval/diagnostics``), the tasks left out for want of their asset
(config ``unavailable``, ``task -> reason``; their table column reads ``unavailable``), and the
lineage: the students it scored as inputs, the result files (results.json, table.md, table.csv, plots)
as its output artifact."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dskd.evaluation.config import EvalConfig
from dskd.evaluation.tables import aggregate, difference_rows, table_rows
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
    for model, columns in aggregate(records).items():
        for column, (mean, std) in columns.items():
            key = f"{model}/{column.replace(' ', '/')}"
            out[key] = mean
            if std is not None:
                out[f"{key}_std"] = std
    return out


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
    header, rows = table_rows(records, order, unavailable)
    tables = {"eval/results": wandb.Table(columns=header, data=rows)}
    diff_header, diff_rows = difference_rows(
        records, order, ec.baseline, ec.bootstrap_resamples, ec.bootstrap_seed
    )
    if diff_rows:
        tables["eval/differences"] = wandb.Table(columns=diff_header, data=diff_rows)
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
