"""Ablations: run the grid of a W&B sweep file locally and summarise it (table, plot, W&B report).

A sweep file (``experiments/sweeps/*.yaml``) is a plain W&B grid sweep, so the same file drives a W&B
agent and ``dskd ablate``, which expands the grid here (:mod:`~dskd.launch.ablate.sweep`), builds the
lexicon and any sense dictionary a point needs, e.g. one per ``senses.k``, and trains each point with
W&B logging offline (:mod:`~dskd.launch.ablate.runner`), reads the runs back
(:mod:`~dskd.launch.ablate.results`) and writes ``summary.md``, ``summary.csv``, ``ablation.png`` and
``ablation.json``, or a W&B report (:mod:`~dskd.launch.ablate.report`). See docs/ablations.md.
"""

from dskd.launch.ablate.report import (
    CURVES,
    FINALS,
    build_report,
    create_dashboard,
    default_out_dir,
    markdown_table,
    panels,
    plot,
    summarise,
    table_rows,
    write_table,
)
from dskd.launch.ablate.results import (
    TAIL_FRACTION,
    RunResult,
    collect,
    discover,
    final_metrics,
    load_run,
    read_metrics_csv,
    read_wandb_history,
)
from dskd.launch.ablate.runner import prepare, run_points
from dskd.launch.ablate.sweep import Point, Sweep, format_override, grid, load_sweep, point_configs

__all__ = [
    "CURVES",
    "FINALS",
    "TAIL_FRACTION",
    "Point",
    "RunResult",
    "Sweep",
    "build_report",
    "collect",
    "create_dashboard",
    "default_out_dir",
    "discover",
    "final_metrics",
    "format_override",
    "grid",
    "load_run",
    "load_sweep",
    "markdown_table",
    "panels",
    "plot",
    "point_configs",
    "prepare",
    "read_metrics_csv",
    "read_wandb_history",
    "run_points",
    "summarise",
    "table_rows",
    "write_table",
]
