"""`dskd reproduce`: the whole pipeline of a preset, from assets to the results table.

A preset is a folder with ``kd.yaml`` and ``dskd.yaml`` (which share a ``base.yaml``): a name picks
a packaged preset (``dskd/resources/presets/<name>/``, the same files as ``experiments/<name>/`` in
the repository), a path with a ``/`` any folder, e.g. an edited copy. The pipeline runs: lexicon ->
sense dictionary -> the teacher's continuations (when the preset trains with ``data.targets: teacher``)
-> teacher cache (when the preset trains with ``teacher.mode: cached``: one cache
for every method and seed, :mod:`dskd.launch.caches`) -> KD and DSKD training for each seed (same
data and seed for both) -> evaluation of the teacher and every student -> ``table.md``,
``results.json`` and plots in ``eval.output_dir``.
Stages whose outputs are up to date are skipped (:mod:`dskd.core.stamps`).

The assets of the training stages (the teacher, WordNet, the corpora of the data sources:
:func:`training_assets`) are checked, and fetched when missing, before the first stage; one that cannot
be had stops the pipeline there (exit status 2). An evaluation task whose asset cannot be had is left
out and named in the results (:func:`dskd.evaluation.suite.build_suite`); the next run evaluates again.

``--rehearse`` runs a preset as written on a CPU with 2 processes, with stand-ins only for the
teacher, the hub data and the GPUs (:mod:`dskd.launch.rehearsal`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

from dskd.assets import ASSETS, asset_path
from dskd.config.loading import load_config
from dskd.config.schema import ExperimentConfig
from dskd.core.devices import check_accelerator, from_first, is_global_zero, launcher_group
from dskd.core.errors import AssetError, ConfigError
from dskd.core.io import read_json
from dskd.core.outputs import check_output
from dskd.core.stamps import STAMP, is_current, run_stage, stage_key
from dskd.corpora.config import SourceConfig
from dskd.evaluation.run import TEACHER, evaluate, unavailable_tasks
from dskd.launch.caches import build_caches, build_continuations
from dskd.lexicon.build import build as build_lexicon
from dskd.lexicon.config import LexiconConfig
from dskd.models.config import TeacherConfig
from dskd.models.shared import TeacherHolder
from dskd.resources import resource
from dskd.senses.build import build as build_senses
from dskd.senses.config import SensesConfig
from dskd.training.run import run_dir, started_together, train

PRESETS = resource("presets")
"""The packaged presets (``experiments/<preset>/`` in the repository holds the same files)."""
METHODS = ("kd", "dskd")
OPTIONAL_VARIANTS = ("dskd-plus", "dskd-plus-pull")
"""Further runs of a preset, trained and evaluated when the preset has their YAML file."""
SOURCE_ASSETS = {"wordnet_corpus": "wordnet-corpus", "shakespeare": "shakespeare", "bigbench": "bigbench-mc"}
"""The asset each offline data-source kind reads (:mod:`dskd.corpora.sources`; a bigbench source given
as a ``.json`` path reads that file)."""


def preset_dir(preset: str, root: Path = PRESETS) -> Path:
    """The folder of ``preset``: a packaged preset by name, or a folder given as a path with a ``/``."""
    path = Path(preset) if "/" in preset else root / preset
    if not all((path / f"{m}.yaml").is_file() for m in METHODS):
        known = sorted(p.name for p in root.iterdir() if all((p / f"{m}.yaml").is_file() for m in METHODS))
        raise ConfigError(
            f"Unknown preset '{preset}': {path} needs kd.yaml and dskd.yaml. "
            f"Known presets: {', '.join(known)}, or a folder path such as experiments/tiny."
        )
    return path


def preset_configs(
    preset: str, seeds: list[int], overrides: list[str], root: Path = PRESETS
) -> list[ExperimentConfig]:
    """The KD, DSKD (and DSKD+, DSKD+ pull-only where the preset has their YAML files) config of
    every seed (KD first), each validated."""
    path = preset_dir(preset, root)
    variants = [*METHODS, *(v for v in OPTIONAL_VARIANTS if (path / f"{v}.yaml").is_file())]
    return [load_config(path / f"{v}.yaml", [*overrides, f"seed={s}"]) for s in seeds for v in variants]


def _source_asset(src: SourceConfig) -> str | None:
    """The asset a data source reads, if any."""
    if src.kind == "bigbench" and (src.path or "").endswith(".json"):
        return None
    return SOURCE_ASSETS.get(src.kind)


def training_assets(configs: list[ExperimentConfig]) -> dict[str, str]:
    """``asset -> the config key that needs it`` for the stages before the evaluation: the teacher, an hf
    student and the lexicon's tokenizer named by an asset, WordNet for the lexicon, and the corpora of
    the sense and training data sources."""
    needs: dict[str, str] = {}
    for cfg in configs:
        named = [("teacher.model", cfg.teacher.model), ("lexicon.tokenizer", cfg.lexicon.tokenizer)]
        if cfg.student.kind == "hf":
            named.append(("student.model", cfg.student.model))
        named += [("lexicon.sources", "wordnet") for s in cfg.lexicon.sources if s.kind == "wordnet"]
        for key in ("senses.sources", "data.train", "data.val"):
            section, field = key.split(".")
            named += [(key, _source_asset(src)) for src in getattr(getattr(cfg, section), field)]
        for key, name in named:
            if name in ASSETS:
                needs.setdefault(name, key)
    return needs


def fetch_training_assets(configs: list[ExperimentConfig]) -> None:
    """Check (and fetch when missing) every asset of :func:`training_assets`; an AssetError naming the
    asset and the key that needs it, before anything runs, when one cannot be had."""
    for name, key in training_assets(configs).items():
        try:
            asset_path(name)
        except AssetError as e:
            raise AssetError(
                f"dskd reproduce needs the asset '{name}' ({key}) to train, and it cannot be had, so no "
                f"stage was run. {e}"
            ) from e


def _teacher_key(teacher: TeacherConfig) -> dict[str, Any]:
    """The teacher settings a sense dictionary depends on (not how training reads the teacher)."""
    return {
        k: v for k, v in dataclasses.asdict(teacher).items() if k != "mode" and not k.startswith("cache_")
    }


def artifact_keys(lexicon: LexiconConfig, senses: SensesConfig, teacher: TeacherConfig) -> tuple[str, str]:
    """The stage keys of the lexicon and of the sense dictionary of a DSKD run (what their stamps hold)."""
    lex_key = stage_key(lexicon, teacher.model, teacher.revision)
    return lex_key, stage_key(senses, _teacher_key(teacher), lex_key)


def set_aside(rdir: Path) -> Path:
    """Rename the run folder ``rdir`` to ``<rdir>.old-<its stage key>`` (``-2``, ``-3``... when taken),
    every file in it kept; returns the new path."""
    try:
        old_key = str(read_json(rdir / STAMP).get("key"))
    except (OSError, ValueError):
        old_key = "unknown"
    base = rdir.with_name(f"{rdir.name}.old-{old_key}")
    dest, n = base, 1
    while dest.exists():
        n += 1
        dest = Path(f"{base}-{n}")
    rdir.rename(dest)
    return dest


def _train(
    cfg: ExperimentConfig,
    senses_key: str | None,
    cache_key: str | None,
    force: bool,
    teachers: TeacherHolder | None = None,
) -> dict[str, Any]:
    """The training stage of one config, keyed by all of it but ``eval`` and by the artifacts it reads
    (the sense dictionary of a DSKD run, the teacher cache of a cached one); ``teachers``: the
    process's held teacher."""
    parts = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "eval"}
    key = stage_key(parts, senses_key) if cache_key is None else stage_key(parts, senses_key, cache_key)
    rdir = run_dir(cfg.runs_dir, cfg.name, cfg.seed)
    first = is_global_zero()
    name = f"train {cfg.name} seed {cfg.seed}"
    if first:
        check_output(rdir, "run")  # a folder of something else under runs_dir is never touched
        if (rdir / STAMP).exists() and not is_current(rdir, key):  # a finished run of another config
            print(f"=== {name}: {rdir} holds a finished run of another config; moved to {set_aside(rdir)}")
    result = run_stage(name, rdir, key, lambda: train(cfg, teachers=teachers), force, collective=True)
    if first and (not result or not result.get("export_dir")):
        raise ConfigError(f"Training {cfg.name} (seed {cfg.seed}) exported no student; see {rdir}.")
    return result


def reproduce(configs: list[ExperimentConfig], force: bool = False) -> dict[str, Any]:
    """Run every stage for ``configs`` (from :func:`preset_configs`); returns the eval records, the runs'
    summaries, the wall time and the ``unavailable`` eval tasks (``task -> reason``).

    One teacher serves every stage of the process (:class:`dskd.models.shared.TeacherHolder`). Processes
    a launcher started together (torchrun, srun) build the senses, continuations and teacher cache
    together, each a share; after training every process of the run evaluates a share of the models.
    """
    t0 = time.perf_counter()
    for cfg in configs:
        check_accelerator(cfg.trainer.accelerator)
    fetch_training_assets(configs)
    first = configs[0]
    dskd_cfg = next((c for c in configs if c.method == "dskd"), first)
    lex_key, senses_key = artifact_keys(dskd_cfg.lexicon, dskd_cfg.senses, dskd_cfg.teacher)
    teachers = TeacherHolder()
    run_stage(
        "lexicon", dskd_cfg.lexicon.output_dir, lex_key, lambda: str(build_lexicon(dskd_cfg).path), force
    )
    # Lightning starts a run's other processes only at fit, where they meet stamps: no group before
    with launcher_group() if started_together() else contextlib.nullcontext(False) as together:

        def senses():
            return build_senses(dskd_cfg, together=together, teachers=teachers).stats

        run_stage("senses", dskd_cfg.senses.output_dir, senses_key, senses, force, collective=together)
        build_continuations(configs, force, teachers, together)
        cache_keys = build_caches(configs, senses_key, force, teachers=teachers, together=together)
    models: dict[str, str] = {TEACHER: first.teacher.model}
    summaries = []
    for cfg in configs:
        cache_key = cache_keys.get(cfg.cache.dir) if cfg.teacher.mode == "cached" else None
        summary = _train(cfg, senses_key if cfg.method == "dskd" else None, cache_key, force, teachers)
        summaries.append(summary)
        models[f"{cfg.row_name}@{cfg.seed}"] = summary["export_dir"]
    with launcher_group() as together:  # the processes of the runs, when training started others
        if not together and not is_global_zero():
            return {"records": None, "runs": summaries, "wall_s": time.perf_counter() - t0, "unavailable": {}}
        records, unavailable = _evaluate(first, models, summaries, force, teachers, together)
    wall_s = time.perf_counter() - t0
    if is_global_zero():
        print(f"=== reproduce: finished in {wall_s:.0f} s; results in {first.eval.output_dir}")
        table = Path(first.eval.output_dir) / "table.md"
        if table.is_file():
            print(table.read_text(encoding="utf-8"))
    return {"records": records, "runs": summaries, "wall_s": wall_s, "unavailable": unavailable}


def _evaluate(
    cfg: ExperimentConfig,
    models: dict[str, str],
    summaries: list[dict[str, Any]],
    force: bool,
    teachers: TeacherHolder,
    together: bool,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The eval stage: (records, unavailable tasks). An evaluation that left tasks out is not up to date:
    it runs again (retrying their assets) even when its key matches. ``together``: every process of
    the default group scores a share of the models (as `dskd eval` under torchrun), deciding on the
    first one's models and key (only it exported the students and timed the runs)."""
    out = cfg.eval.output_dir
    key = stage_key(cfg.eval, models, [s.get("wall_time_s") for s in summaries])
    missed = unavailable_tasks(out) if is_current(out, key) else {}
    models, key, missed = from_first((models, key, missed))
    if missed and not force and is_global_zero():
        print(f"=== eval: {', '.join(missed)} could not be evaluated last time; evaluating again", flush=True)

    def run():
        return evaluate(cfg, models, force, together, teachers)

    records = run_stage("eval", out, key, run, force or bool(missed), collective=together)
    return records, unavailable_tasks(out)
