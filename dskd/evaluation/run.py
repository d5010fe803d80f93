"""`evaluate(cfg, models)`: score the teacher and students on the suite; write results.json, tables, plots.

Models are ``{name: path}``; a name may end in ``@SEED`` (``dskd@1``) so that several training seeds
of one method form one table row (mean ± std). Outputs in ``cfg.eval.output_dir``:
``results.json`` (every number with benchmark, metric, model, seed, items, chance, wall time and its
per-item values), ``table.md`` (and the differences to ``eval.baseline``), ``table.csv``,
``scores.png``, ``losses.png`` and ``diagnostics.png`` (from the runs' metrics.csv;
:mod:`dskd.evaluation.plots`). The table also goes into the model
card of each exported student, and everything into an ``eval`` W&B run
(:mod:`dskd.evaluation.wandb_results`) when ``logging.wandb`` is on.
A task whose asset cannot be had is left out (:func:`dskd.evaluation.suite.build_suite`) and listed in
results.json's ``unavailable`` (``task -> reason``) and under the tables; ``dskd eval`` and
``dskd reproduce`` then exit with :data:`UNAVAILABLE_EXIT`.
The folder is refused when it holds anything but dskd eval results, or results of models this
evaluation would drop (:func:`check_results_folder`), unless ``overwrite`` is given.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml

from dskd.config.schema import ExperimentConfig, row_name
from dskd.core.devices import all_gather_object, barrier, numerics, rank_world, resolve_device
from dskd.core.errors import ConfigError, DSKDError
from dskd.core.io import provenance, read_artifact_json, write_json_atomic, write_text_atomic
from dskd.core.outputs import SEED_FOLDER, check_output, mark_output
from dskd.evaluation.config import EvalConfig
from dskd.evaluation.plots import plot_losses, plot_scores
from dskd.evaluation.suite import Suite, build_suite, check_tasks, score_model
from dskd.evaluation.tables import differences, render_csv, render_markdown
from dskd.evaluation.wandb_results import EvalRun, log_evaluation
from dskd.models.card import META, write_card
from dskd.models.config import TeacherConfig
from dskd.models.loading import load_causal_lm, load_tokenizer
from dskd.models.shared import TeacherHolder, held

TEACHER = "teacher"
UNAVAILABLE_EXIT = 3
"""Exit status of `dskd eval` and `dskd reproduce` when they finished but some eval tasks were unavailable."""


def split_name(name: str) -> tuple[str, int | None]:
    """``"dskd@1"`` -> ``("dskd", 1)``; ``"kd"`` -> ``("kd", None)``."""
    base, sep, seed = name.rpartition("@")
    if not sep:
        return name, None
    if not seed.isdigit():
        raise ConfigError(f"Model name '{name}': the part after '@' must be a seed number, e.g. dskd@1.")
    return base, int(seed)


def parse_models(entries: list[str]) -> dict[str, str]:
    """``["NAME=PATH", ...]`` -> ``{NAME: PATH}``."""
    out = {}
    for e in entries:
        name, sep, path = e.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"Model '{e}' must be NAME=PATH, e.g. dskd=runs/tiny/tiny-dskd/seed-0/export.")
        out[name] = path
    return out


def students(models: dict[str, str]) -> list[str]:
    """The names of ``models`` that are not the teacher."""
    return [n for n in models if split_name(n)[0] != TEACHER]


def check_results_folder(out_dir: Path, models: dict[str, str], overwrite: bool = False) -> None:
    """Refuse ``out_dir`` unless it may take the results of ``models`` (:func:`dskd.outputs.check_output`);
    without ``overwrite`` also when its results.json holds models that ``models`` leaves out."""
    check_output(out_dir, "eval", overwrite, [p for p in models.values() if Path(p).exists()])
    results = out_dir / "results.json"
    if overwrite or not results.is_file():
        return
    rebuild = "Delete it or pass --overwrite."
    before = read_artifact_json(results, rebuild).get("provenance", {}).get("inputs", {}).get("models", {})
    dropped = sorted(set(before) - set(models))
    if dropped:
        raise DSKDError(
            f"{results} holds results of {', '.join(dropped)}, which this evaluation ({', '.join(models)}) "
            "would drop. Pass --overwrite (dskd reproduce: --force) to replace them, name every model with "
            "--model, or set eval.output_dir to another folder."
        )


def discover_models(teacher: str, runs_dir: str) -> dict[str, str]:
    """The ``teacher`` plus every exported student under ``runs_dir`` (``<run>/seed-S/export``), named
    as `dskd reproduce` names them, ``<row name>@S`` (the run's label or method: ``KD@0``, so the
    tables hold the differences to KD), or ``<run>@S`` where runs would share that name or the run
    has no readable config.yaml."""
    found = []  # (row name or None, run, seed, export)
    for export in sorted(Path(runs_dir).glob("*/seed-*/export")):
        if SEED_FOLDER.fullmatch(export.parent.name) and (export / "config.json").is_file():
            seed = export.parent.name.removeprefix("seed-")
            found.append((_run_row_name(export.parent), export.parent.parent.name, seed, str(export)))
    shared = Counter((row, seed) for row, _, seed, _ in found)
    models = {TEACHER: teacher}
    for row, run, seed, export in found:
        unique = row is not None and row != TEACHER and shared[(row, seed)] == 1
        models[f"{row if unique else run}@{seed}"] = export
    return models


def _run_row_name(seed_dir: Path) -> str | None:
    """The row name (:func:`dskd.config.schema.row_name`) of the run whose config.yaml is in
    ``seed_dir``; None when it cannot be read."""
    try:
        cfg = yaml.safe_load((seed_dir / "config.yaml").read_text(encoding="utf-8"))
        return row_name(str(cfg.get("label") or ""), str(cfg["method"]))
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        return None


def unavailable_tasks(out_dir: str | Path) -> dict[str, str]:
    """``task -> reason`` of the tasks the evaluation in ``out_dir`` left out (none without results.json)."""
    results = Path(out_dir) / "results.json"
    if not results.is_file():
        return {}
    return read_artifact_json(results, "Delete it or pass --overwrite.").get("unavailable", {})


def report_unavailable(unavailable: dict[str, str]) -> int:
    """0, or print which tasks were not evaluated and return :data:`UNAVAILABLE_EXIT`."""
    if not unavailable:
        return 0
    print(
        f"[eval] finished, but {len(unavailable)} task(s) were unavailable and not evaluated: "
        f"{', '.join(unavailable)} (reasons above and under the table); exit status {UNAVAILABLE_EXIT}. "
        "Supply the asset(s) and run again to add them.",
        file=sys.stderr,
        flush=True,
    )
    return UNAVAILABLE_EXIT


def _metrics_csvs(models: dict[str, str]) -> dict[str, Path]:
    """metrics.csv of each student run (the folder above its export/)."""
    out = {}
    for name, path in models.items():
        csv_path = Path(path).parent / "metrics.csv"
        if name != TEACHER and csv_path.is_file():
            out[name] = csv_path
    return out


def evaluate(
    cfg: ExperimentConfig,
    models: dict[str, str],
    overwrite: bool = False,
    together: bool = False,
    teachers: TeacherHolder | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every model on ``cfg.eval.tasks``; write the outputs and return the result records.

    ``overwrite``: replace ``cfg.eval.output_dir`` whatever it holds (see :func:`check_results_folder`).
    ``together``: every process of the default group calls this (``dskd eval`` under torchrun or srun,
    :func:`dskd.devices.launcher_group`): the models are dealt to the ranks (model i to rank i mod
    world), each rank scores its own on its own device, and rank 0 gathers the records and writes the
    outputs; every rank returns all records once they are written. Otherwise this process evaluates
    every model alone, whatever group it belongs to. ``teachers``: the process's held teacher (it
    scores the KL of the students and, named by ``teacher.model``, itself; default: one loaded for
    this evaluation, gone when it ends).
    """
    ec = cfg.eval
    check_tasks(ec.tasks)
    out_dir = Path(ec.output_dir)
    if not models:
        raise ConfigError("No models to evaluate: pass --model NAME=PATH or train and export students first.")
    device = resolve_device(ec.device, "eval.device")
    rank, world = rank_world() if together else (0, 1)
    check_results_folder(out_dir, models, overwrite)  # every rank: it only reads
    if rank == 0:
        mark_output(out_dir, "eval")
    if together:
        barrier()
    teacher_tok = _with_pad(load_tokenizer(cfg.teacher.model, cfg.teacher.revision))
    suite = build_suite(ec, teacher_tok, out_dir / "lm_eval_tasks")
    by_model: dict[str, list[dict[str, Any]]] = {}
    mine = {n: path for i, (n, path) in enumerate(models.items()) if i % world == rank}
    with held(teachers) as holder:
        scoring = Scoring(cfg.teacher, holder, device)
        for name, model_records in _score_models(scoring, cfg.seed, suite, teacher_tok, mine):
            by_model[name] = model_records
            if world == 1:  # results so far survive a crash
                done = [r for n in models if n in by_model for r in by_model[n]]
                write_results(done, ec, models, suite.unavailable)
    for part in all_gather_object(by_model) if together else []:
        by_model.update(part)
    records = [r for n in models for r in by_model[n]]
    if rank == 0:
        if world > 1:
            write_results(records, ec, models, suite.unavailable)
        if ec.plot:
            diffs = differences(records, ec.baseline, ec.bootstrap_resamples, ec.bootstrap_seed)
            plot_scores(records, out_dir / "scores.png", diffs)
            plot_losses(_metrics_csvs(models), out_dir / "losses.png", out_dir / "diagnostics.png")
        lg = cfg.logging
        wandb_run = EvalRun(lg.project, cfg.preset, lg.tags, lg.artifacts) if lg.wandb else None
        publish(ec, wandb_run, records, models, suite.unavailable)
    if together:
        barrier()
    return records


class Scoring(NamedTuple):
    """Where the models are scored: the teacher's section, the process's held teacher, the device."""

    teacher: TeacherConfig
    teachers: TeacherHolder
    device: torch.device


def _score_models(
    scoring: Scoring, seed: int, suite: Suite, teacher_tok: Any, models: dict[str, str]
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(name, result records) of each of ``models`` in turn on ``suite``; ``seed``: that of the records
    of a model named without ``@SEED``. The teacher (for the students' KL, and itself when its path
    is ``teacher.model``) is the held one."""
    t, device = scoring.teacher, scoring.device
    teacher = None
    if suite.needs_teacher and students(models):
        teacher = scoring.teachers.get(t, device)
    for name, path in models.items():
        model_name, model_seed = split_name(name)
        is_teacher = model_name == TEACHER
        t0 = time.perf_counter()
        if is_teacher and (teacher is not None or str(path) == str(t.model)):
            model = teacher if teacher is not None else scoring.teachers.get(t, device)
        else:
            model = load_causal_lm(path, t.dtype, device=device)
        tokenizer = teacher_tok if is_teacher else _with_pad(load_tokenizer(path))
        with torch.inference_mode():
            scores = score_model(suite, model, tokenizer, None if is_teacher else teacher)
        secs = time.perf_counter() - t0
        print(f"[eval] {name}: {len(scores)} scores in {secs:.0f} s on {device}", flush=True)
        del model  # free the device for the next model (the teacher stays referenced as `teacher`)
        record_seed = model_seed if model_seed is not None else seed
        yield (
            name,
            [{"model": model_name, "seed": record_seed, "path": str(path), **asdict(s)} for s in scores],
        )


def publish(
    ec: EvalConfig,
    wandb_run: EvalRun | None,
    records: list[dict[str, Any]],
    models: dict[str, str],
    unavailable: dict[str, str] | None = None,
) -> None:
    """The results table (and the student's own scores, its model-index) into the model card of every
    exported student; the ``eval`` W&B run
    ``wandb_run`` (None: logging.wandb is off)."""
    order = list(dict.fromkeys(split_name(n)[0] for n in models))
    table = results_table(records, ec, order, unavailable)
    for path in models.values():
        if (Path(path) / META).is_file():
            write_card(path, table, [r for r in records if r.get("path") == str(path)])
    if wandb_run is not None:
        log_evaluation(ec, wandb_run, records, models, order, unavailable)


def write_results(
    records: list[dict[str, Any]],
    ec: EvalConfig,
    models: dict[str, str],
    unavailable: dict[str, str] | None = None,
) -> None:
    """results.json (with provenance and the ``unavailable`` tasks' reasons), table.md and table.csv in
    ``ec.output_dir``."""
    out_dir = Path(ec.output_dir)
    order = list(dict.fromkeys(split_name(n)[0] for n in models))
    unavailable = unavailable or {}
    write_json_atomic(
        out_dir / "results.json",
        {
            "provenance": provenance("eval", {"models": models, "tasks": ec.tasks}),
            "numerics": numerics(),
            "config": asdict(ec),
            "unavailable": unavailable,
            "results": records,
        },
    )
    write_text_atomic(out_dir / "table.md", results_table(records, ec, order, unavailable))
    write_text_atomic(out_dir / "table.csv", render_csv(records, order, unavailable))


def results_table(
    records: list[dict[str, Any]],
    ec: EvalConfig,
    order: list[str],
    unavailable: dict[str, str] | None = None,
) -> str:
    """table.md: the results table (with the ``unavailable`` tasks) and the differences to
    ``eval.baseline`` (models in ``order``)."""
    return render_markdown(
        records, order, ec.baseline, ec.bootstrap_resamples, ec.bootstrap_seed, unavailable
    )


def _with_pad(tokenizer: Any) -> Any:
    """Batched forwards need a pad token; use EOS where the tokenizer has none."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
