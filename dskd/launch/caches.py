"""The teacher's continuations and teacher caches of a set of runs (`dskd reproduce`, `dskd ablate`).

Continuations (``data.targets=teacher``): one stage per ``data.continuations_dir``, over the prompts
of every seed of the runs that read it (each file is keyed by its prompts, so runs of other data can
share the folder).

Teacher caches: one build per ``cache.dir``.

Every run with ``teacher.mode=cached`` reads the cache at its ``cache.dir``; the runs that
share a folder share one cache, built once over the sequences of all their seeds (KD and DSKD of a
preset, every point of a sweep). Runs that share a folder must agree on everything the cache depends
on (:data:`SHARED`); a grid that varies one of those (e.g. ``loss.kd.tau`` with sampled targets)
needs one folder per value, e.g. ``cache.dir: ${artifacts_dir}/teacher_cache-tau${loss.kd.tau}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from dskd.config.schema import ExperimentConfig
from dskd.core.errors import ConfigError
from dskd.core.stamps import run_stage, stage_key
from dskd.data.continuations import build as build_continuation_files
from dskd.data.continuations import continuations_key
from dskd.models.shared import StageProcess, TeacherHolder
from dskd.teacher_cache.build import build, data_fingerprint

SHARED: dict[str, Callable[[ExperimentConfig], object]] = {
    "teacher": lambda c: dataclasses.replace(c.teacher, mode="cached"),
    "data (the sequences: data.train, val, seq_len, pack, shuffle, targets, batch size, workers)": lambda c: (
        data_fingerprint(c.data),
        c.data.batch_size,
        c.data.num_workers,
    ),
    "loss.kd.tau": lambda c: c.loss.kd.tau,
    "trainer (steps, batches, world size)": lambda c: (
        c.trainer.max_steps,
        c.trainer.max_epochs,
        c.trainer.accumulate_grad_batches,
        c.trainer.limit_val_batches,
        c.trainer.devices,
        c.trainer.num_nodes,
        c.trainer.accelerator,
    ),
}
"""What the runs sharing one cache folder must agree on (the sequences, targets and tau it holds)."""


def cache_groups(configs: list[ExperimentConfig]) -> dict[str, list[ExperimentConfig]]:
    """The cached configs by ``cache.dir``; refuses a folder whose runs need different caches."""
    groups: dict[str, list[ExperimentConfig]] = {}
    for cfg in configs:
        if cfg.teacher.mode == "cached":
            groups.setdefault(cfg.cache.dir, []).append(cfg)
    for folder, cfgs in groups.items():
        for what, get in SHARED.items():
            values = {repr(get(c)) for c in cfgs}
            if len(values) > 1:
                raise ConfigError(
                    f"Runs sharing the teacher cache {folder} differ in {what}, so one cache cannot serve "
                    f"them all; give each its own cache.dir, e.g. "
                    "cache.dir=${artifacts_dir}/teacher_cache-tau${loss.kd.tau} for a tau grid."
                )
    return groups


def build_continuations(
    configs: list[ExperimentConfig],
    force: bool = False,
    teachers: TeacherHolder | None = None,
    together: bool = False,
) -> dict[str, str]:
    """The teacher-continuations stage of every ``data.continuations_dir`` the runs with
    ``data.targets=teacher`` read, over the seeds of all of them (up to date: skipped). Returns each
    folder's stage key. (A cache's and a run's keys hold the teacher and data sections the
    continuations depend on, so new continuations rebuild and retrain what reads them.) ``teachers``:
    the process's held teacher; ``together``: every process of the default group generates a share."""
    groups: dict[str, list[ExperimentConfig]] = {}
    for cfg in configs:
        if cfg.data.targets == "teacher":
            groups.setdefault(cfg.data.continuations_dir, []).append(cfg)
    keys: dict[str, str] = {}
    for folder, cfgs in groups.items():
        seeds = sorted({c.seed for c in cfgs})
        key = stage_key(*sorted({continuations_key(c.data, c.teacher, seeds) for c in cfgs}))

        def run(cfgs=cfgs, seeds=seeds):
            stats = {}
            for c in cfgs:  # a file built for one config is found by the next: each builds what it lacks
                stats = build_continuation_files(c, seeds, teachers).stats
            return stats

        run_stage(f"teacher continuations (seeds {seeds})", folder, key, run, force, collective=together)
        keys[folder] = key
    return keys


def build_caches(
    configs: list[ExperimentConfig],
    upstream: str | None,
    force: bool = False,
    progress: bool = True,
    teachers: TeacherHolder | None = None,
    together: bool = False,
) -> dict[str, str]:
    """Build (or find up to date) the cache of every group of :func:`cache_groups`: over the seeds of
    all its runs, with hidden states (float16, at the positions of every DSKD run's lexicon and
    dictionary) when one of them trains the sense loss. ``upstream``: the stage key of the lexicon and
    dictionary. ``teachers``: the process's held teacher; ``together``: every process of the default
    group runs the teacher on a share of the batches. Returns each folder's stage key (a run's key
    includes it: a rebuilt cache retrains)."""
    keys: dict[str, str] = {}
    for folder, cfgs in cache_groups(configs).items():
        dskd_cfgs = [c for c in cfgs if c.method == "dskd"]
        base = (dskd_cfgs or cfgs)[0]
        seeds = sorted({c.seed for c in cfgs})
        hidden = "float16" if dskd_cfgs else "none"
        senses = sorted({(c.lexicon.output_dir, c.senses.output_dir) for c in dskd_cfgs})
        shared = [get(base) for get in SHARED.values()]
        parts = (shared, base.trainer, seeds, hidden, senses, upstream)
        key = stage_key("teacher-cache", *parts)

        def run(base=base, seeds=seeds, hidden=hidden, dskd_cfgs=dskd_cfgs):
            process = StageProcess(teachers, together, progress)
            return build(base, seeds, hidden, True, dskd_cfgs, process).stats

        run_stage(f"teacher cache (seeds {seeds})", folder, key, run, force, collective=together)
        keys[folder] = key
    return keys
