"""`train(cfg)`: one distillation run from an experiment config.

Writes ``runs_dir/name/seed-S/``: ``config.yaml`` (resolved), ``tokenizer/``, ``checkpoints/``
(``last.ckpt``, Lightning format, student only), ``metrics.csv``, ``wandb/``, ``export/`` (plain
Hugging Face folder of the student) and ``summary.json`` (final metrics, wall time, paths).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dskd.config.schema import ExperimentConfig
from dskd.core.devices import check_accelerator, is_global_zero, local_device, numerics
from dskd.core.errors import DSKDError, TrainingInterrupted
from dskd.core.io import write_json_atomic
from dskd.core.outputs import StageResult, check_name, check_output, mark_output
from dskd.core.quiet import eval_modules_intended, quiet_lightning
from dskd.core.stamps import run_stage, stage_key
from dskd.corpora.sources import hub_datasets
from dskd.data.bpe import bpe_tokenizer
from dskd.data.config import DataConfig, OnPolicyConfig
from dskd.data.continuations import build as build_continuations
from dskd.data.continuations import continuations_key, missing_continuations, read_continuations
from dskd.data.datamodule import CrossTokenizerDataModule, DSKDDataModule
from dskd.lexicon import Lexicon
from dskd.losses.config import ULD_DIVERGENCES
from dskd.losses.uld import VocabMatch
from dskd.models.config import StudentConfig, TeacherConfig
from dskd.models.export import export_checkpoint
from dskd.models.loading import load_tokenizer, runtime_dtype, tokenizer_fingerprint
from dskd.models.shared import StageProcess, TeacherHolder
from dskd.models.student import (
    build_projection,
    build_student,
    check_vocab,
    decoder_layer_class,
    decoder_layers,
    hidden_size,
)
from dskd.models.trunk import shared_depth, shared_modules, splits_exactly
from dskd.senses import SenseDictionary
from dskd.senses.config import SensesConfig
from dskd.teacher_cache.build import CacheSpec, open_cache, world_size
from dskd.teacher_cache.build import build as build_cache
from dskd.teacher_cache.loading import load_teacher_prefix
from dskd.teacher_cache.store import META_FILE
from dskd.tracking.session import finish_wandb
from dskd.training.callbacks import CheckpointOnInterrupt, EmptyDataGuard, check_run_end
from dskd.training.checkpoints import (
    AtomicCheckpointIO,
    ResumeAtEpochStart,
    pick_checkpoint,
    previous_path,
    remove_staging,
    save_for_resume,
)
from dskd.training.config import TrainerConfig
from dskd.training.examples import ExampleIds
from dskd.training.loggers import (
    GlobalStepLogs,
    WandbRun,
    build_loggers,
    folder_inputs,
    log_training,
    run_tags,
    truncate_csv,
    wandb_experiment,
)
from dskd.training.module import DistillationModule, DistillationParts, DistillationSettings
from dskd.training.progress import ProgressLines, StepProgressBar, TokenThroughput, flops_per_token
from dskd.training.resume import check_same_experiment, has_validation, resumable, resume_candidates
from dskd.training.runlock import RunLock
from dskd.training.sharing import trunk_off_reason
from dskd.training.slurm import slurm_callbacks, slurm_plugins
from dskd.training.strategies import build_strategy

log = logging.getLogger(__name__)


def run_dir(runs_dir: str, name: str, seed: int) -> Path:
    """``runs_dir/name/seed-S``; a ``name`` that is not one safe path component is a ConfigError."""
    return Path(runs_dir) / check_name(name, "The run name (name)") / f"seed-{seed}"


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


class RunModels(NamedTuple):
    """What :func:`load_models` loads."""

    tokenizer: Any
    """The teacher's tokenizer."""
    teacher: torch.nn.Module
    student: torch.nn.Module
    projection: torch.nn.Module | None
    student_tokenizer: Any
    """The student's tokenizer (:func:`student_tokenizer`; the teacher's unless the student has its own)."""


def student_tokenizer(cfg: StudentConfig, teacher_tokenizer):
    """The student's tokenizer: its model's own (kind=hf), the WordNet BPE (kind=scratch with
    student.tokenizer=wordnet-bpe, dskd/data/bpe.py), else the teacher's."""
    if cfg.kind == "hf":
        return load_tokenizer(cfg.model)
    if cfg.kind == "scratch" and cfg.tokenizer == "wordnet-bpe":
        return bpe_tokenizer(cfg.bpe_vocab_size)
    return teacher_tokenizer


class ModelSpec(NamedTuple):
    """The sections :func:`load_models` reads."""

    teacher: TeacherConfig
    student: StudentConfig
    trainer: TrainerConfig
    on_policy: OnPolicyConfig
    method: str
    divergence: str
    """``loss.kd.divergence``: uld / uld_hybrid skip the vocabulary check (a cross-tokenizer run)."""


def load_models(spec: ModelSpec, teachers: TeacherHolder | None = None) -> RunModels:
    """The tokenizers and models of a run of ``cfg``, with the vocabulary check done (skipped by a
    cross-tokenizer run, ``loss.kd.divergence`` uld or uld_hybrid); the projection only with
    method=dskd. The teacher is the one ``teachers`` holds (default: its own).

    With ``teacher.mode=cached`` the teacher has only the layers the student copies (see
    :func:`dskd.teacher_cache.loading.load_teacher_prefix`) unless it scores on-policy batches
    (:func:`teacher_runs`): it never runs, and the held one goes first (its memory is the run's).
    """
    tc, student_cfg, teachers = spec.teacher, spec.student, teachers or TeacherHolder()
    runs = teacher_runs(tc, spec.on_policy)
    tokenizer = load_tokenizer(tc.model, tc.revision)
    if not runs:
        teachers.release()
        teacher = load_teacher_prefix(tc, student_cfg)
    else:  # straight onto this process's device: no full copy of the teacher in host memory per rank
        device = local_device() if spec.trainer.accelerator != "cpu" else torch.device("cpu")
        teacher = teachers.get(tc, device)
    teacher.requires_grad_(False)
    student_tok = student_tokenizer(student_cfg, tokenizer)
    student = _build_student(student_cfg, spec.trainer, teacher, (tc.dtype if runs else None, student_tok))
    if spec.divergence not in ULD_DIVERGENCES:
        own = student_tok if student_tok is not tokenizer else None
        check_vocab(teacher, student, tokenizer, own, spec.divergence)
    projection = build_projection(student_cfg, student, teacher) if spec.method == "dskd" else None
    return RunModels(tokenizer, teacher, student, projection, student_tok)


def _build_student(
    cfg: StudentConfig, trainer: TrainerConfig, teacher: torch.nn.Module, how: tuple[str | None, Any]
) -> torch.nn.Module:
    """The student of ``cfg`` on the teacher's device, sharing the teacher's trunk where
    ``student.share_trunk`` can apply (a one-line note where it cannot); ``how``: (the teacher's
    dtype, None: the teacher never runs, the student's trunk is the only one; the student's tokenizer,
    the vocabulary of kind=scratch). Its own weights in fp32 unless bf16-true."""
    teacher_dtype, vocab = how
    reason = "" if teacher_dtype is None or not cfg.share_trunk else None
    if reason is None:
        device = next(teacher.parameters()).device
        reason = trunk_off_reason(cfg, trainer, runtime_dtype(teacher_dtype, device))
    student = build_student(cfg, teacher, share=reason is None, vocab=vocab)
    if reason is None and not splits_exactly(student, teacher):
        reason = f"{type(teacher).__name__} does not split at a layer"
        student = build_student(cfg, teacher)
    if reason:
        log.info("note: student.share_trunk off: %s.", reason)
    depth = shared_depth(student, teacher)
    if trainer.precision != "bf16-true":  # master weights in fp32 (mixed precision casts per op)
        for module in list(decoder_layers(student))[depth:] if depth else [student]:
            module.to(torch.float32)  # shared modules stay in the teacher's dtype
    return student


def export_generation_config(teacher: torch.nn.Module, student_tok) -> dict[str, Any]:
    """The generation config the export gets: the teacher's (eos ids, sampling defaults), or, for a
    cross-tokenizer student (``student_tok`` not None), the ids of its tokenizer's EOS and padding."""
    if student_tok is None:
        return teacher.generation_config.to_dict()
    eos = student_tok.eos_token_id
    return {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": student_tok.pad_token_id}


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
    data: DataConfig,
    teacher: TeacherConfig,
    seed: int,
    tokenizer,
    lexicon_dir: str | None = None,
    senses: SenseDictionary | None = None,
) -> DSKDDataModule:
    """The DSKD data module of a run: the lexicon in ``lexicon_dir`` (a run with the sense loss; None
    without), the teacher's continuations with data.targets=teacher; ``senses`` (the loaded
    dictionary) tells which neighbours have senses."""
    keys = senses.key_ids.cpu().numpy() if senses is not None else None
    lexicon = Lexicon.load(lexicon_dir) if lexicon_dir is not None else None
    continuations = read_continuations(data, teacher, tokenizer, seed) if data.targets == "teacher" else None
    return DSKDDataModule(data, seed, tokenizer, lexicon, keys, continuations)


class TrainerParts(NamedTuple):
    """What the trainer of a run is built with besides its ``trainer:`` section."""

    strategy: Any
    grad_clip: float
    """optim.grad_clip (FSDP: the module clips, not the trainer)."""
    loggers: list
    flops_per_token: int
    """Model FLOPs per training token (for the MFU)."""
    example_ids: bool
    """logging.example_ids."""
    callbacks: list
    """Added after the run's own."""


def build_trainer(t: TrainerConfig, rdir: Path, parts: TrainerParts) -> pl.Trainer:
    """The Lightning trainer of a run writing to ``rdir``."""
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
    quiet_lightning(one_process=world_size(t) == 1)
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=_devices(t.devices),
        num_nodes=t.num_nodes,
        strategy=parts.strategy,
        precision=t.precision,
        max_steps=t.max_steps,
        max_epochs=t.max_epochs if t.max_steps == -1 else None,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=None if t.strategy == "fsdp" else parts.grad_clip,  # FSDP: the module clips
        log_every_n_steps=t.log_every_n_steps,
        logger=parts.loggers,
        # DeepSpeed writes its checkpoint folders itself
        plugins=slurm_plugins() + ([] if t.strategy.startswith("deepspeed") else [AtomicCheckpointIO()]),
        enable_progress_bar=tty,
        callbacks=[
            checkpoint,
            TokenThroughput(parts.flops_per_token, t.log_every_n_steps),
            StepProgressBar() if tty else ProgressLines(t.log_every_n_steps),
            CheckpointOnInterrupt(rdir / "checkpoints" / "last.ckpt"),
            GlobalStepLogs(),
            EmptyDataGuard(),
            ResumeAtEpochStart(),
            *([ExampleIds(rdir)] if parts.example_ids else []),
            *slurm_callbacks(rdir / "checkpoints"),
            *parts.callbacks,
        ],
        default_root_dir=str(rdir),
        use_distributed_sampler=False,  # ResumableLoader deals batches to the processes
        num_sanity_val_steps=0,
        limit_val_batches=t.limit_val_batches if t.limit_val_batches is not None else 1.0,
        enable_model_summary=False,
        **val,
    )


def train(
    cfg: ExperimentConfig,
    datamodule=None,
    callbacks: list | None = None,
    export: bool = True,
    teachers: TeacherHolder | None = None,
) -> dict[str, Any]:
    """Run one distillation; returns the summary (also written to ``summary.json``).

    The stages the run reads and lacks run first (:func:`build_continuations_if_missing`,
    :func:`build_cache_if_missing`), with the run's own teacher. ``datamodule`` replaces the DSKD data
    module built from ``cfg.data`` (custom data, tests); ``callbacks`` are added to the trainer's;
    ``export`` writes the Hugging Face folder at the end; ``teachers``: the process's held teacher
    (`dskd reproduce`: the one of every stage; default: the run's own).
    """
    t0 = time.perf_counter()
    check_accelerator(cfg.trainer.accelerator)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rdir = run_dir(cfg.runs_dir, cfg.name, cfg.seed)
    check_output(rdir, "run")  # a folder of something else under runs_dir is never written into
    if is_global_zero():  # marked before anything is written into it, so a run that fails keeps its name
        mark_output(rdir, "run")
    dskd = cfg.method == "dskd"
    sense_dirs = (cfg.lexicon.output_dir, cfg.senses.output_dir) if dskd else None
    spec = CacheSpec(cfg.teacher, cfg.cache, cfg.data, cfg.loss.kd, cfg.trainer, cfg.seed, sense_dirs)
    together = started_together()
    holder = teachers or TeacherHolder()  # one teacher for the stages below and the run
    if cfg.data.targets == "teacher":
        build_continuations_if_missing(
            cfg.data, cfg.teacher, cfg.seed, together, lambda: build_continuations(cfg, teachers=holder)
        )
    if cfg.teacher.mode == "cached":
        hidden = "float16" if dskd else "none"
        build_cache_if_missing(
            spec,
            hidden,
            together,
            lambda: build_cache(cfg, hidden_dtype=hidden, process=StageProcess(holder)),
        )
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # after the stages: the same run either way
    ckpt_dir = rdir / "checkpoints"
    tokenizer, teacher, student, projection, student_tok = load_models(
        ModelSpec(
            cfg.teacher, cfg.student, cfg.trainer, cfg.data.on_policy, cfg.method, cfg.loss.kd.divergence
        ),
        holder,
    )
    cross = cfg.loss.kd.divergence in ULD_DIVERGENCES  # cross-tokenizer KD: the student's own tokenizer
    generation = export_generation_config(teacher, student_tok if cross else None)
    senses = load_senses(cfg.senses, cfg.lexicon.output_dir, tokenizer, teacher) if dskd else None
    if not teacher_runs(cfg.teacher, cfg.data.on_policy):
        teacher = None  # its lower layers only served to build the student
    config_yaml = cfg.to_yaml()
    ckpt_path, step = _resume_from(cfg.trainer.resume, config_yaml, rdir)
    t = cfg.trainer
    unresumed = dataclasses.replace(cfg, trainer=dataclasses.replace(t, resume=""))
    wandb = WandbRun(
        name=f"{cfg.name}-seed{cfg.seed}",
        group=cfg.preset,
        tags=run_tags(cfg.method, cfg.student, cfg.loss, cfg.data, cfg.logging.tags),
        config=dataclasses.asdict(cfg),
        fingerprint=hashlib.sha256(unresumed.to_yaml().encode()).hexdigest(),
        artifacts=cfg.logging.artifacts,
        inputs=folder_inputs(cfg.preset, sense_dirs[0], cfg.senses, cfg.teacher.model) if sense_dirs else [],
    )
    trainer = build_trainer(
        t,
        rdir,
        TrainerParts(
            strategy=build_strategy(
                t, decoder_layer_class(student), cfg.data.batch_size, shared_modules(student, teacher)
            ),
            grad_clip=cfg.optim.grad_clip,
            loggers=build_loggers(cfg.logging, wandb, rdir, t.log_every_n_steps, ckpt_path is not None),
            flops_per_token=flops_per_token(student, teacher, projection),
            example_ids=cfg.logging.example_ids,
            callbacks=callbacks or [],
        ),
    )
    cached = open_cache(spec, tokenizer) if cfg.teacher.mode == "cached" else None
    match = VocabMatch.of(tokenizer, student_tok) if cross else None
    parts = DistillationParts(student, teacher, senses, projection, cached, generation, match)
    settings = DistillationSettings(
        cfg.method,
        cfg.loss,
        cfg.optim,
        t,
        cfg.teacher,
        cfg.data.on_policy,
        cfg.seed,
        config_yaml,
        cfg.data.seq_len,
    )
    module = DistillationModule(settings, parts)
    lexicon_dir = cfg.lexicon.output_dir if dskd else None
    if datamodule is None and cross:
        datamodule = CrossTokenizerDataModule(
            cfg.data, cfg.seed, tokenizer, student_tok, Lexicon.load(lexicon_dir) if dskd else None
        )
        datamodule.sense_keys = senses.key_ids.cpu().numpy() if senses is not None else None
    dm = datamodule or build_datamodule(cfg.data, cfg.teacher, cfg.seed, tokenizer, lexicon_dir, senses)
    with RunLock(rdir) if trainer.is_global_zero else contextlib.nullcontext():
        if trainer.is_global_zero:
            _tidy(ckpt_dir, ckpt_path)
            cfg.save(rdir)
            cfg.save(ckpt_dir)
            (student_tok if cross else tokenizer).save_pretrained(str(rdir / "tokenizer"))  # the export's
            truncate_csv(rdir / "metrics.csv", step + 1)  # rows up to the checkpoint's step stay
        identity = {"name": cfg.name, "method": cfg.method, "seed": cfg.seed}
        datasets = tuple(hub_datasets([*cfg.data.train, *cfg.senses.sources]))
        options = FitOptions(
            ckpt_path, export, t0, rdir, identity, wandb if cfg.logging.wandb else None, datasets
        )
        return _fit(trainer, module, dm, options)


def started_together() -> bool:
    """Whether a launcher started this process with others at once: torchrun (RANK and WORLD_SIZE; not
    Lightning, which sets WORLD_SIZE in the first process when it starts the others at fit) or srun
    (SLURM_STEP_NUM_TASKS, which only srun sets)."""
    torchrun = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE") or 1) > 1
    return torchrun or int(os.environ.get("SLURM_STEP_NUM_TASKS") or 1) > 1


def build_continuations_if_missing(
    data: DataConfig, teacher: TeacherConfig, seed: int, together: bool, build: Callable[[], StageResult]
) -> None:
    """Run the continuations stage (``build``) in the open (its progress line, its stamp) when the
    continuations a run reads (``data.targets=teacher``) are missing. Only a process that is alone
    so far builds them (Lightning starts a run's other processes later, at fit, and they find them);
    processes a launcher started together (``together``: torchrun, srun) would all write them: they
    are refused with the command that builds them. Present continuations are checked by the data
    module."""
    tokenizer = load_tokenizer(teacher.model, teacher.revision)
    if not missing_continuations(data, teacher, tokenizer, seed):
        return
    if together:
        read_continuations(data, teacher, tokenizer, seed)  # its error names the command
    key = continuations_key(data, teacher, [seed])
    run_stage("teacher continuations", data.continuations_dir, key, lambda: build().stats, force=True)


def build_cache_if_missing(
    spec: CacheSpec, hidden: str, together: bool, build: Callable[[], StageResult]
) -> None:
    """Run the teacher cache stage (``build``; ``hidden``: the dtype of its hidden states, float16 for
    method=dskd, else none) in the open when ``cache.dir`` holds no cache, as
    :func:`build_continuations_if_missing` does. A present cache is checked when it opens."""
    cache = spec.cache
    if (Path(cache.dir) / META_FILE).is_file():
        return
    if together:
        flag = "" if hidden == "float16" else " --hidden-dtype none"
        raise DSKDError(
            f"teacher.mode=cached reads the teacher cache at {cache.dir}, and there is none. "
            "Processes started together (torchrun, srun) do not build it (every one would write "
            f"it): build it first with `dskd cache build CONFIG [key=value ...]{flag}` (the run's "
            "config and overrides), then start the run again."
        )
    key = stage_key("teacher-cache", spec, [spec.seed], hidden)
    run_stage("teacher cache", cache.dir, key, lambda: build().stats, force=True)


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
    """How :func:`_fit` runs: from which checkpoint, whether it exports, since when it is timed, into
    which run folder, what the summary names the run by, and its W&B run (None: no W&B)."""

    ckpt_path: str | None
    export: bool
    t0: float
    rdir: Path
    identity: dict[str, Any]
    """name, method and seed of the run (the first keys of its summary)."""
    wandb: WandbRun | None
    datasets: tuple[str, ...] = ()
    """The hub data sets the run read (the exported model card's ``datasets``)."""


def _fit(trainer: pl.Trainer, module, dm, options: FitOptions) -> dict[str, Any]:
    """Fit (from ``options.ckpt_path`` if given), validate, export; the summary of :func:`train`."""
    ckpt_path, export, t0, rdir, identity, wandb, datasets = options
    ckpt_dir = rdir / "checkpoints"
    wrapped = resumable(dm)
    try:
        with eval_modules_intended(module.trunk is not None):  # the teacher's frozen layers, in eval mode
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
    save_for_resume(trainer, ckpt_dir / "last.ckpt")  # a later resume reads it
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k != "loss"}
    if has_validation(dm):
        # the weights in memory are those just saved; no reload (DeepSpeed ZeRO-3 cannot reload into
        # its validation engine), and no hpc_ckpt_N.ckpt in the run folder for Lightning to pick up
        trainer.validate(module, datamodule=wrapped, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    policy = module.settings.trainer.nan_policy
    try:
        check_run_end(trainer.global_step, module.last_step_skipped, metrics, policy)
    except DSKDError:
        finish_wandb()  # the W&B run keeps the values that stopped the run
        raise
    summary: dict[str, Any] = {
        **identity,
        "global_step": trainer.global_step,
        "skipped_steps": module.skipped_steps,
        "metrics": metrics,
        "wall_time_s": round(time.perf_counter() - t0, 2),
        "numerics": numerics(),
        "run_dir": str(rdir),
        "checkpoint_dir": str(ckpt_dir),
        "export_dir": None,
    }
    if trainer.is_global_zero:
        if export:
            summary["export_dir"] = str(
                export_checkpoint(ckpt_dir / "last.ckpt", rdir / "export", datasets=datasets)
            )
        summary["wall_time_s"] = round(time.perf_counter() - t0, 2)
        write_json_atomic(rdir / "summary.json", summary)
        if wandb is not None:
            log_training(wandb_experiment(trainer), wandb, summary["export_dir"], trainer.global_step)
    finish_wandb()
    return summary
