"""`train(cfg)`: one distillation run from an experiment config.

Writes ``runs_dir/name/seed-S/``: ``config.yaml`` (resolved), ``tokenizer/``, ``checkpoints/``
(``last.ckpt``, Lightning format, student only), ``metrics.csv``, ``wandb/``, ``export/`` (plain
Hugging Face folder of the student) and ``summary.json`` (final metrics, wall time, paths).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dskd.config.loading import config_to_yaml, save_config
from dskd.config.schema import ExperimentConfig
from dskd.core.devices import local_device
from dskd.core.errors import DSKDError, TrainingInterrupted
from dskd.core.io import write_json_atomic
from dskd.core.outputs import check_name, check_output, mark_output
from dskd.core.stamps import run_stage, stage_key
from dskd.data.config import OnPolicyConfig
from dskd.data.continuations import build as build_continuations
from dskd.data.continuations import continuations_key, missing_continuations, read_continuations
from dskd.data.datamodule import DSKDDataModule
from dskd.lexicon import Lexicon
from dskd.models.config import TeacherConfig
from dskd.models.export import export_checkpoint
from dskd.models.loading import load_causal_lm, load_tokenizer, tokenizer_fingerprint
from dskd.models.student import build_projection, build_student, check_vocab, decoder_layer_class, hidden_size
from dskd.senses import SenseDictionary
from dskd.senses.config import SensesConfig
from dskd.teacher_cache.build import CacheSpec, open_cache
from dskd.teacher_cache.build import build as build_cache
from dskd.teacher_cache.loading import load_teacher_prefix
from dskd.teacher_cache.store import META_FILE
from dskd.tracking.session import finish_wandb
from dskd.training.callbacks import CheckpointOnInterrupt, EmptyDataGuard
from dskd.training.checkpoints import AtomicCheckpointIO, pick_checkpoint, previous_path, remove_staging
from dskd.training.examples import ExampleIds
from dskd.training.loggers import WandbRun, build_loggers, log_training, truncate_csv, wandb_experiment
from dskd.training.module import DistillationModule, DistillationParts, DistillationSettings
from dskd.training.progress import ProgressLines, StepProgressBar, TokenThroughput, flops_per_token
from dskd.training.resume import check_same_experiment, has_validation, resumable, resume_candidates
from dskd.training.runlock import RunLock
from dskd.training.slurm import slurm_callbacks, slurm_plugins
from dskd.training.strategies import build_strategy

log = logging.getLogger(__name__)


def run_dir(cfg: ExperimentConfig) -> Path:
    """``runs_dir/name/seed-S``; a ``name`` that is not one safe path component is a ConfigError."""
    return Path(cfg.runs_dir) / check_name(cfg.name, "The run name (name)") / f"seed-{cfg.seed}"


def _devices(value: str) -> Any:
    text = str(value).strip()
    if text == "auto":
        return "auto"
    if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
        return int(text)
    return [int(x) for x in text.strip("[]").split(",") if x.strip()]


def teacher_runs(teacher: TeacherConfig, on_policy: OnPolicyConfig) -> bool:
    """Whether the run needs the whole teacher: online, or cached with on-policy batches (the cache
    serves the fixed text, the live teacher scores the student's generations; docs/training.md)."""
    return teacher.mode == "online" or on_policy.fraction > 0


def load_models(cfg: ExperimentConfig):
    """(tokenizer, teacher, student, projection) for ``cfg``, with the vocabulary check done.

    With ``teacher.mode=cached`` the teacher has only the layers the student copies (see
    :func:`dskd.teacher_cache.loading.load_teacher_prefix`) unless it scores on-policy batches
    (:func:`teacher_runs`): it never runs.
    """
    tokenizer = load_tokenizer(cfg.teacher.model, cfg.teacher.revision)
    if not teacher_runs(cfg.teacher, cfg.data.on_policy):
        teacher = load_teacher_prefix(cfg.teacher, cfg.student)
    else:  # straight onto this process's device: no full copy of the teacher in host memory per rank
        device = local_device() if cfg.trainer.accelerator != "cpu" else torch.device("cpu")
        teacher = load_causal_lm(cfg.teacher.model, cfg.teacher.dtype, cfg.teacher.revision, device=device)
    teacher.requires_grad_(False)
    student = build_student(cfg.student, teacher)  # copied on the teacher's device
    if cfg.trainer.precision not in ("bf16-true",):
        student.to(torch.float32)  # master weights in fp32 (mixed precision casts per op)
    student_tok = load_tokenizer(cfg.student.model) if cfg.student.kind == "hf" else None
    check_vocab(teacher, student, tokenizer, student_tok)
    projection = build_projection(cfg.student, student, teacher) if cfg.method == "dskd" else None
    return tokenizer, teacher, student, projection


def load_senses(senses_cfg: SensesConfig, lexicon_dir: str, tokenizer, teacher) -> SenseDictionary:
    """The sense dictionary of ``senses_cfg`` (only the keys of the lexicon in ``lexicon_dir`` with
    ``senses.restrict_to_lexicon``), checked against the run's tokenizer and teacher."""
    keys = None
    if senses_cfg.restrict_to_lexicon:
        keys = torch.from_numpy(Lexicon.load(lexicon_dir).sense_keys())
    senses = SenseDictionary.load(senses_cfg.output_dir, device=senses_cfg.device, keys=keys)
    if keys is not None:
        log.info("senses.restrict_to_lexicon: kept %d of the lexicon's %d keys", len(senses), len(keys))
    senses.check_compatible(
        tokenizer_fingerprint=tokenizer_fingerprint(tokenizer), hidden_size=hidden_size(teacher)
    )
    return senses


def build_datamodule(
    cfg: ExperimentConfig, tokenizer, senses: SenseDictionary | None = None
) -> DSKDDataModule:
    """The DSKD data module of a run: the lexicon with method=dskd, the teacher's continuations with
    data.targets=teacher; ``senses`` (the loaded dictionary) tells which neighbours have senses."""
    keys = senses.key_ids.cpu().numpy() if senses is not None else None
    lexicon = Lexicon.load(cfg.lexicon.output_dir) if cfg.method == "dskd" else None
    teacher = cfg.data.targets == "teacher"
    continuations = read_continuations(cfg.data, cfg.teacher, tokenizer, cfg.seed) if teacher else None
    return DSKDDataModule(cfg.data, cfg.seed, tokenizer, lexicon, keys, continuations)


def build_trainer(
    cfg: ExperimentConfig,
    rdir: Path,
    student,
    callbacks: list | None = None,
    resuming: bool = False,
    flops_per_token: int = 0,
):
    """The Lightning trainer of a run; ``resuming``: it continues a checkpoint (the W&B run continues
    too); ``flops_per_token``: model FLOPs per training token (for the MFU)."""
    t = cfg.trainer
    checkpoint = ModelCheckpoint(
        dirpath=str(rdir / "checkpoints"),
        every_n_train_steps=t.checkpoint_every_n_steps,
        save_top_k=0,
        save_last=True,
    )
    tty = sys.stdout.isatty()  # elsewhere (a SLURM .out file, a redirected log): plain progress lines
    val = {}
    if t.val_check_interval is not None:
        val = {"val_check_interval": int(t.val_check_interval), "check_val_every_n_epoch": None}
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=_devices(t.devices),
        num_nodes=t.num_nodes,
        strategy=build_strategy(t, decoder_layer_class(student), cfg.data.batch_size),
        precision=t.precision,
        max_steps=t.max_steps,
        max_epochs=t.max_epochs if t.max_steps == -1 else None,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=None if t.strategy == "fsdp" else cfg.optim.grad_clip,  # FSDP: the module clips
        log_every_n_steps=t.log_every_n_steps,
        logger=build_loggers(cfg.logging, WandbRun.from_config(cfg), rdir, t.log_every_n_steps, resuming),
        # DeepSpeed writes its checkpoint folders itself
        plugins=slurm_plugins() + ([] if t.strategy.startswith("deepspeed") else [AtomicCheckpointIO()]),
        enable_progress_bar=tty,
        callbacks=[
            checkpoint,
            TokenThroughput(flops_per_token, t.log_every_n_steps),
            StepProgressBar() if tty else ProgressLines(t.log_every_n_steps),
            CheckpointOnInterrupt(rdir / "checkpoints" / "last.ckpt"),
            EmptyDataGuard(),
            *([ExampleIds(rdir)] if cfg.logging.example_ids else []),
            *slurm_callbacks(rdir / "checkpoints"),
            *(callbacks or []),
        ],
        default_root_dir=str(rdir),
        use_distributed_sampler=False,  # ResumableLoader deals batches to the processes
        num_sanity_val_steps=0,
        limit_val_batches=t.limit_val_batches if t.limit_val_batches is not None else 1.0,
        enable_model_summary=False,
        **val,
    )


def train(
    cfg: ExperimentConfig, datamodule=None, callbacks: list | None = None, export: bool = True
) -> dict[str, Any]:
    """Run one distillation; returns the summary (also written to ``summary.json``).

    The stages the run reads and lacks run first (:func:`build_inputs`). ``datamodule`` replaces the
    DSKD data module built from ``cfg.data`` (custom data, tests); ``callbacks`` are added to the
    trainer's; ``export`` writes the Hugging Face folder at the end.
    """
    t0 = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rdir = run_dir(cfg)
    check_output(rdir, "run")  # a folder of something else under runs_dir is never written into
    build_inputs(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # after the stages: the same run either way
    ckpt_dir = rdir / "checkpoints"
    tokenizer, teacher, student, projection = load_models(cfg)
    generation = teacher.generation_config.to_dict()  # eos ids and sampling defaults, for the export
    senses = (
        load_senses(cfg.senses, cfg.lexicon.output_dir, tokenizer, teacher) if cfg.method == "dskd" else None
    )
    if not teacher_runs(cfg.teacher, cfg.data.on_policy):
        teacher = None  # its lower layers only served to build the student
    ckpt_path, step = _resume_from(cfg.trainer.resume, config_to_yaml(cfg), rdir)
    flops = flops_per_token(student, teacher, projection)
    trainer = build_trainer(cfg, rdir, student, callbacks, ckpt_path is not None, flops)
    cached = open_cache(CacheSpec.of(cfg), tokenizer) if cfg.teacher.mode == "cached" else None
    parts = DistillationParts(student, teacher, senses, projection, cached, generation)
    module = DistillationModule(DistillationSettings.of(cfg), parts)
    dm = datamodule if datamodule is not None else build_datamodule(cfg, tokenizer, senses)
    with RunLock(rdir) if trainer.is_global_zero else contextlib.nullcontext():
        if trainer.is_global_zero:
            _tidy(ckpt_dir, ckpt_path)
            mark_output(rdir, "run")
            save_config(cfg, rdir)
            save_config(cfg, ckpt_dir)
            tokenizer.save_pretrained(str(rdir / "tokenizer"))
            truncate_csv(rdir / "metrics.csv", step)
        return _fit(cfg, trainer, module, dm, FitOptions(ckpt_path, export, t0))


def started_together() -> bool:
    """Whether a launcher started this process with others at once: torchrun (RANK and WORLD_SIZE; not
    Lightning, which sets WORLD_SIZE in the first process when it starts the others at fit) or srun
    (SLURM_STEP_NUM_TASKS, which only srun sets)."""
    torchrun = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE") or 1) > 1
    return torchrun or int(os.environ.get("SLURM_STEP_NUM_TASKS") or 1) > 1


def build_inputs(cfg: ExperimentConfig) -> None:
    """The stages a run reads and lacks, run here in the open (their progress line, their stamp; the
    stage functions `dskd reproduce` calls): the teacher's continuations (``data.targets=teacher``)
    and the teacher cache (``teacher.mode=cached``; hidden states for method=dskd). Only a process
    that is alone so far builds them (Lightning starts a run's other processes later, at fit, and
    they find them); processes a launcher started together (torchrun, srun) would all write them:
    they are refused with the command that builds them. Present inputs are not checked here (the
    data module and the cache check them)."""
    together = started_together()
    if cfg.data.targets == "teacher":
        tokenizer = load_tokenizer(cfg.teacher.model, cfg.teacher.revision)
        if missing_continuations(cfg.data, cfg.teacher, tokenizer, cfg.seed):
            if together:
                read_continuations(cfg.data, cfg.teacher, tokenizer, cfg.seed)  # its error names the command
            key = continuations_key(cfg.data, cfg.teacher, [cfg.seed])
            build = lambda: build_continuations(cfg).stats  # noqa: E731
            run_stage("teacher continuations", cfg.data.continuations_dir, key, build, force=True)
    if cfg.teacher.mode == "cached" and not (Path(cfg.cache.dir) / META_FILE).is_file():
        hidden = "float16" if cfg.method == "dskd" else "none"
        if together:
            flag = "" if hidden == "float16" else " --hidden-dtype none"
            raise DSKDError(
                f"teacher.mode=cached reads the teacher cache at {cfg.cache.dir}, and there is none. "
                "Processes started together (torchrun, srun) do not build it (every one would write "
                f"it): build it first with `dskd cache build CONFIG [key=value ...]{flag}` (the run's "
                "config and overrides), then start the run again."
            )
        key = stage_key("teacher-cache", CacheSpec.of(cfg), [cfg.seed], hidden)
        build = lambda: build_cache(cfg, hidden_dtype=hidden).stats  # noqa: E731
        run_stage("teacher cache", cfg.cache.dir, key, build, force=True)


def _resume_from(resume: str, config_yaml: str, rdir: Path) -> tuple[str | None, int]:
    """(checkpoint to continue from, its step): the first usable one ``resume`` (``trainer.resume``)
    allows, checked to be of the experiment whose resolved config is ``config_yaml`` (nothing is
    written)."""
    picked = pick_checkpoint(resume_candidates(resume, rdir / "checkpoints"))
    if picked is None:
        return None, 0
    path, ckpt = picked
    if ckpt is None:  # a DeepSpeed checkpoint folder: keep the whole log
        return str(path), 2**62
    check_same_experiment(config_yaml, ckpt, path)
    return str(path), int(ckpt["global_step"])


def _tidy(ckpt_dir: Path, ckpt_path: str | None) -> None:
    """Remove killed saves' staging files; set an unusable last.ckpt aside when resuming from the one
    before it (the next save would otherwise replace the checkpoint resumed from)."""
    for path in remove_staging(ckpt_dir, ckpt_dir.parent):
        log.warning("note: removed %s (the staging file of a checkpoint save that was killed)", path)
    last = ckpt_dir / "last.ckpt"
    if ckpt_path == str(previous_path(last)) and last.is_file():
        os.replace(last, last.with_name("last.ckpt.unusable"))


class FitOptions(NamedTuple):
    """How :func:`_fit` runs: from which checkpoint, whether it exports, since when it is timed."""

    ckpt_path: str | None
    export: bool
    t0: float


def _fit(cfg: ExperimentConfig, trainer: pl.Trainer, module, dm, options: FitOptions) -> dict[str, Any]:
    """Fit (from ``options.ckpt_path`` if given), validate, export; the summary of :func:`train`."""
    ckpt_path, export, t0 = options
    rdir = run_dir(cfg)
    ckpt_dir = rdir / "checkpoints"
    wrapped = resumable(dm)
    try:
        trainer.fit(module, datamodule=wrapped, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit as e:  # Lightning's SIGTERMException (also after Ctrl-C): the callback saved last.ckpt
        if not isinstance(e, SIGTERMException):
            raise
        finish_wandb()
        stop = next(c for c in trainer.callbacks if isinstance(c, CheckpointOnInterrupt))
        held = "holds that step" if stop.saved else "was not updated (stopped outside a training batch)"
        error = TrainingInterrupted(
            f"Stopped by {stop.signal.name} at step {trainer.global_step}; {ckpt_dir / 'last.ckpt'} {held}. "
            "Continue with the same command and trainer.resume=auto."
        )
        error.exit_code = 128 + int(stop.signal)
        raise error from e
    trainer.save_checkpoint(str(ckpt_dir / "last.ckpt"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k != "loss"}
    if has_validation(dm):
        # the weights in memory are those just saved; no reload (DeepSpeed ZeRO-3 cannot reload into
        # its validation engine), and no hpc_ckpt_N.ckpt in the run folder for Lightning to pick up
        trainer.validate(module, datamodule=wrapped, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    summary: dict[str, Any] = {
        "name": cfg.name,
        "method": cfg.method,
        "seed": cfg.seed,
        "global_step": trainer.global_step,
        "skipped_steps": module.skipped_steps,
        "metrics": metrics,
        "wall_time_s": round(time.perf_counter() - t0, 2),
        "run_dir": str(rdir),
        "checkpoint_dir": str(ckpt_dir),
        "export_dir": None,
    }
    if trainer.is_global_zero:
        if export:
            summary["export_dir"] = str(export_checkpoint(ckpt_dir / "last.ckpt", rdir / "export"))
        summary["wall_time_s"] = round(time.perf_counter() - t0, 2)
        write_json_atomic(rdir / "summary.json", summary)
        if cfg.logging.wandb:
            run = WandbRun.from_config(cfg)
            log_training(wandb_experiment(trainer), run, summary["export_dir"], trainer.global_step)
    finish_wandb()
    return summary
