"""Running a grid locally: build the lexicon / sense dictionaries the points need, then train each point."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from dskd.core.errors import ArtifactMismatchError
from dskd.launch.ablate.sweep import Point
from dskd.launch.caches import build_caches, build_continuations, cache_groups
from dskd.lexicon.build import build as build_lexicon
from dskd.senses.build import build as build_senses
from dskd.senses.config import SensesConfig
from dskd.tracking.session import finish_wandb
from dskd.training.run import train

_SENSES_BUILD_KEYS = (
    "k",
    "keying",
    "sources",
    "cap_per_source",
    "max_rows_per_key",
    "max_length",
    "max_tokens",
)
"""senses.* keys a built dictionary depends on (compared with its saved config.yaml)."""


def _senses_mismatch(senses: SensesConfig) -> dict[str, tuple[Any, Any]]:
    """senses key -> (built, needed) where the dictionary at ``senses.output_dir`` differs from ``senses``."""
    built = Path(senses.output_dir) / "config.yaml"
    if built.is_file():
        have = (yaml.safe_load(built.read_text()) or {}).get("senses", {})
    else:
        meta = json.loads((Path(senses.output_dir) / "meta.json").read_text())
        have = {"k": meta.get("k"), "keying": meta.get("keying")}
    want = asdict(senses)
    return {k: (have[k], want[k]) for k in _SENSES_BUILD_KEYS if k in have and have[k] != want[k]}


def _check_senses(p: Point) -> str | None:
    """Refuse a dictionary of another k, keying or swept senses.* value; other differences -> a warning."""
    diffs = _senses_mismatch(p.cfg.senses)
    hard = {k for k in diffs if k in ("k", "keying") or f"senses.{k}" in p.settings}
    text = "; ".join(f"senses.{k}: built {b!r}, needed {w!r}" for k, (b, w) in diffs.items())
    where = p.cfg.senses.output_dir
    if hard:
        raise ArtifactMismatchError(
            f"The sense dictionary at {where} does not fit grid point {p.settings} ({text}). Give each "
            "setting its own folder, e.g. the sweep parameter "
            'senses.output_dir: {value: "${artifacts_dir}/senses-k${senses.k}"}.'
        )
    if diffs:
        return (
            f"=== warning: the sense dictionary at {where} was built from other settings ({text}); "
            "rebuild it with `dskd senses build` for a faithful run."
        )
    return None


def prepare(points: list[Point], progress: bool = True) -> list[str]:
    """Build the lexicon and the sense dictionaries the DSKD points need and lack (returns those
    folders), then the teacher's continuations of the points with ``data.targets=teacher`` and the
    teacher cache of the points with ``teacher.mode=cached``, one per
    ``cache.dir`` over all their seeds (:mod:`dskd.launch.caches`; skipped when up to date).

    Every point is checked first, so an existing dictionary that does not fit a point (e.g. another
    ``senses.k``) is refused before anything is built.
    """
    cache_groups([p.cfg for p in points])  # points that cannot share their cache folder: refused first
    dskd_points = [p for p in points if p.cfg.method == "dskd"]
    warnings = [
        _check_senses(p) for p in dskd_points if (Path(p.cfg.senses.output_dir) / "meta.json").is_file()
    ]
    for warning in dict.fromkeys(w for w in warnings if w):
        print(warning, flush=True)
    built: list[str] = []
    for p in dskd_points:
        cfg = p.cfg
        if not (Path(cfg.lexicon.output_dir) / "meta.json").is_file():
            print(f"=== building the lexicon -> {cfg.lexicon.output_dir}", flush=True)
            build_lexicon(cfg)
            built.append(cfg.lexicon.output_dir)
        if not (Path(cfg.senses.output_dir) / "meta.json").is_file():
            print(
                f"=== building the sense dictionary (k={cfg.senses.k}) -> {cfg.senses.output_dir}", flush=True
            )
            stats = build_senses(cfg, progress=progress).stats
            print(f"=== sense dictionary built in {stats.get('build_seconds', '?')} s", flush=True)
            built.append(cfg.senses.output_dir)
    configs = [p.cfg for p in points]
    build_continuations(configs)  # points with data.targets=teacher
    build_caches(configs, None, progress=progress)  # points with teacher.mode=cached
    return built


def run_points(points: list[Point], export: bool = False) -> None:
    """Train every point whose run has no ``summary.json`` yet (an interrupted one resumes)."""

    for i, p in enumerate(points, 1):
        if (p.run_dir / "summary.json").is_file():
            print(f"=== [{i}/{len(points)}] {p.settings}: done before ({p.run_dir}), skipped", flush=True)
            continue
        print(f"=== [{i}/{len(points)}] {p.settings} -> {p.run_dir}", flush=True)
        try:
            summary = train(p.cfg, export=export)
            print(f"=== [{i}/{len(points)}] done in {summary['wall_time_s']:.1f} s", flush=True)
        finally:
            finish_wandb()  # also after a failed point: the next point starts its own W&B run
