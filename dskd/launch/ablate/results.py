"""Reading runs: Lightning ``metrics.csv`` or the W&B offline run log, final metrics, run discovery."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dskd.launch.ablate.sweep import Point
from dskd.tracking.offline import history, run_id, run_logs

TAIL_FRACTION = 0.25
"""A train/* final metric is the mean over this last fraction of its logged steps."""


@dataclass
class RunResult:
    """One run of an ablation: its knob settings, logged series (metric -> [(step, value)]), final metrics."""

    name: str
    settings: dict[str, Any]
    run_dir: Path
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    finals: dict[str, float] = field(default_factory=dict)


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning ``metrics.csv`` as metric -> [(step, value)] (empty cells skipped, steps ascending)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row["step"]))
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series.setdefault(key, []).append((step, float(value)))
    return {k: sorted(v) for k, v in series.items()}


def read_wandb_history(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Logged numeric metrics (with ``/`` in the name) of the latest W&B run under ``run_dir/wandb``
    (all its segments, when it was resumed), as metric -> [(trainer step, value)]; reads offline
    runs, no server needed."""
    logs = run_logs(run_dir)
    latest = run_id(logs[-1]) if logs else None
    series: dict[str, list[tuple[int, float]]] = {}
    for log in (p for p in logs if run_id(p) == latest):
        for row in history(log):
            step = int(row.get("trainer/global_step", row.get("_step", 0)))
            for key, value in row.items():
                if "/" in key and key != "trainer/global_step" and isinstance(value, int | float):
                    series.setdefault(key, []).append((step, float(value)))
    return series


def final_metrics(
    series: dict[str, list[tuple[int, float]]], tail: float = TAIL_FRACTION
) -> dict[str, float]:
    """Last value of each metric; train/* metrics are averaged over their last ``tail`` fraction of
    NaN-free points (NaN marks a step where the metric does not apply, e.g. train/ce on an on-policy
    batch; a skipped step shows in train/skipped_steps); all NaN gives NaN."""
    out = {}
    for key, points in series.items():
        if key.startswith("train/"):
            points = [p for p in points if not math.isnan(p[1])] or points
        if not points:
            continue
        n = max(1, math.ceil(tail * len(points))) if key.startswith("train/") else 1
        out[key] = sum(v for _, v in points[-n:]) / n
    return out


def load_run(run_dir: str | Path, name: str, settings: dict[str, Any]) -> RunResult:
    """A run's series and final metrics, from its metrics.csv, else from its W&B (offline) run log."""
    run_dir = Path(run_dir)
    csv_path = run_dir / "metrics.csv"
    series = read_metrics_csv(csv_path) if csv_path.is_file() else read_wandb_history(run_dir)
    return RunResult(name, settings, run_dir, series, final_metrics(series))


def collect(points: list[Point]) -> list[RunResult]:
    return [load_run(p.run_dir, p.cfg.name, p.settings) for p in points]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): json.dumps(tree) if isinstance(tree, list) else tree}


def discover(runs_root: str | Path) -> dict[str, list[RunResult]]:
    """Runs under ``runs_root/<preset>/<name>/seed-S/`` per family, with the config keys that vary
    between a family's runs (from each run's config.yaml; names and folders aside) as their settings."""
    families: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for cfg_path in sorted(Path(runs_root).glob("*/*/seed-*/config.yaml")):
        run_dir = cfg_path.parent
        if (run_dir / "metrics.csv").is_file() or (run_dir / "wandb").is_dir():
            flat = _flatten(yaml.safe_load(cfg_path.read_text()) or {})
            families.setdefault(run_dir.parent.parent.name, []).append((run_dir, flat))
    out = {}
    for family, runs in families.items():
        keys = sorted({k for _, flat in runs for k in flat})
        varying = [
            k
            for k in keys
            if k != "name" and not k.endswith("_dir") and len({repr(flat.get(k)) for _, flat in runs}) > 1
        ]
        out[family] = [
            load_run(run_dir, str(flat.get("name")), {k: flat.get(k) for k in varying})
            for run_dir, flat in runs
        ]
    return out
