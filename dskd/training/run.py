"""`train(cfg)`: one distillation run from an experiment config.

Writes ``runs_dir/name/seed-S/``: ``config.yaml`` (resolved), ``tokenizer/``, ``checkpoints/``
(``last.ckpt``, Lightning format, student only), ``metrics.csv``, ``wandb/``, ``export/`` (plain
Hugging Face folder of the student) and ``summary.json`` (final metrics, wall time, paths).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from dskd.config.schema import ExperimentConfig
from dskd.core.errors import TrainingInterrupted

log = logging.getLogger(__name__)


def run_dir(cfg: ExperimentConfig) -> Path:
    """``runs_dir/name/seed-S``; a ``name`` that is not one safe path component is a ConfigError."""
    from dskd.core.outputs import check_name

    return Path(cfg.runs_dir) / check_name(cfg.name, "The run name (name)") / f"seed-{cfg.seed}"


def _devices(value: str) -> Any:
    text = str(value).strip()
    if text == "auto":
        return "auto"
    if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
        return int(text)
    return [int(x) for x in text.strip("[]").split(",") if x.strip()]


def teacher_runs(cfg: ExperimentConfig) -> bool:
    """Whether the run needs the whole teacher: online, or cached with on-policy batches (the cache
    serves the fixed text, the live teacher scores the student's generations; docs/training.md)."""
    return cfg.teacher.mode == "online" or cfg.data.on_policy.fraction > 0


def load_models(cfg: ExperimentConfig):
    """(tokenizer, teacher, student, projection) for ``cfg``, with the vocabulary check done.

    With ``teacher.mode=cached`` the teacher has only the layers the student copies (see
    :func:`dskd.teacher_cache.loading.load_teacher_prefix`) unless it scores on-policy batches
    (:func:`teacher_runs`): it never runs.
    """
    import torch

    from dskd.core.devices import local_device
    from dskd.models.loading import load_causal_lm, load_tokenizer
    from dskd.models.student import build_projection, build_student, check_vocab

    tokenizer = load_tokenizer(cfg.teacher.model, cfg.teacher.revision)
    if not teacher_runs(cfg):
        from dskd.teacher_cache.loading import load_teacher_prefix

        teacher = load_teacher_prefix(cfg)
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


def load_senses(cfg: ExperimentConfig, tokenizer, teacher):
    from dskd.models.loading import tokenizer_fingerprint
    from dskd.models.student import hidden_size
    from dskd.senses import SenseDictionary

    keys = None
    if cfg.senses.restrict_to_lexicon:
        import torch

        from dskd.lexicon import Lexicon

        keys = torch.from_numpy(Lexicon.load(cfg.lexicon.output_dir).sense_keys())
    senses = SenseDictionary.load(cfg.senses.output_dir, device=cfg.senses.device, keys=keys)
    if keys is not None:
        log.info("senses.restrict_to_lexicon: kept %d of the lexicon's %d keys", len(senses), len(keys))
    senses.check_compatible(
        tokenizer_fingerprint=tokenizer_fingerprint(tokenizer), hidden_size=hidden_size(teacher)
    )
    return senses


def build_datamodule(cfg: ExperimentConfig, tokenizer, senses=None):
    """The DSKD data module; ``senses`` (the loaded dictionary) tells which neighbours have senses."""
    from dskd.data.datamodule import DSKDDataModule

    keys = senses.key_ids.cpu().numpy() if senses is not None else None
    return DSKDDataModule(cfg, tokenizer, sense_keys=keys)


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
    import sys

    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from dskd.models.student import decoder_layer_class
    from dskd.training.loggers import build_loggers
    from dskd.training.progress import ProgressLines, StepProgressBar, TokenThroughput
    from dskd.training.strategies import build_strategy

    t = cfg.trainer
    checkpoint = ModelCheckpoint(
        dirpath=str(rdir / "checkpoints"),
        every_n_train_steps=t.checkpoint_every_n_steps,
        save_top_k=0,
        save_last=True,
    )
    from dskd.training.callbacks import CheckpointOnInterrupt, EmptyDataGuard
    from dskd.training.checkpoints import AtomicCheckpointIO
    from dskd.training.examples import ExampleIds
    from dskd.training.slurm import slurm_callbacks, slurm_plugins

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
        logger=build_loggers(cfg, rdir, resuming),
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

    ``datamodule`` replaces the DSKD data module built from ``cfg.data`` (custom data, tests);
    ``callbacks`` are added to the trainer's; ``export`` writes the Hugging Face folder at the end.
    """
    import lightning.pytorch as pl

    from dskd.config.loading import save_config
    from dskd.core.outputs import check_output, mark_output
    from dskd.training.loggers import truncate_csv
    from dskd.training.module import DistillationModule
    from dskd.training.progress import flops_per_token
    from dskd.training.runlock import RunLock

    t0 = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    rdir = run_dir(cfg)
    check_output(rdir, "run")  # a folder of something else under runs_dir is never written into
    ckpt_dir = rdir / "checkpoints"
    tokenizer, teacher, student, projection = load_models(cfg)
    generation = teacher.generation_config.to_dict()  # eos ids and sampling defaults, for the export
    senses = load_senses(cfg, tokenizer, teacher) if cfg.method == "dskd" else None
    if not teacher_runs(cfg):  # the teacher's lower layers only served to build the student
        teacher = None
    ckpt_path, step = _resume_from(cfg, rdir)
    flops = flops_per_token(student, teacher, projection)
    trainer = build_trainer(cfg, rdir, student, callbacks, ckpt_path is not None, flops)
    cached = open_or_build_cache(cfg, tokenizer, trainer.world_size) if cfg.teacher.mode == "cached" else None
    module = DistillationModule(
        cfg, student, teacher, senses, projection, cached=cached, generation_config=generation
    )
    dm = datamodule if datamodule is not None else build_datamodule(cfg, tokenizer, senses)
    with RunLock(rdir) if trainer.is_global_zero else contextlib.nullcontext():
        if trainer.is_global_zero:
            _tidy(ckpt_dir, ckpt_path)
            mark_output(rdir, "run")
            save_config(cfg, rdir)
            save_config(cfg, ckpt_dir)
            tokenizer.save_pretrained(str(rdir / "tokenizer"))
            truncate_csv(rdir / "metrics.csv", step)
        return _fit(cfg, trainer, module, dm, ckpt_path, export, t0)


def open_or_build_cache(cfg: ExperimentConfig, tokenizer, world_size: int):
    """The run's teacher cache; a single-process run whose ``cache.dir`` holds none builds it
    first, as ``dskd cache build CONFIG`` would (hidden states for method=dskd). Several processes
    never build here (they would all write it): ``open_cache`` says to run ``dskd cache build``."""
    from dskd.teacher_cache.build import build, open_cache
    from dskd.teacher_cache.store import META_FILE

    if world_size == 1 and not (Path(cfg.cache.dir) / META_FILE).is_file():
        log.warning("no teacher cache at %s: building it (`dskd cache build`)", cfg.cache.dir)
        hidden = "float16" if cfg.method == "dskd" else "none"
        build(cfg, hidden_dtype=hidden, tokenizer=tokenizer)
    return open_cache(cfg, tokenizer)


def _resume_from(cfg: ExperimentConfig, rdir: Path) -> tuple[str | None, int]:
    """(checkpoint to continue from, its step): the first usable one ``trainer.resume`` allows, checked
    to be of this experiment (nothing is written)."""
    from dskd.config.loading import config_to_yaml
    from dskd.training.checkpoints import pick_checkpoint
    from dskd.training.resume import check_same_experiment, resume_candidates

    picked = pick_checkpoint(resume_candidates(cfg.trainer.resume, rdir / "checkpoints"))
    if picked is None:
        return None, 0
    path, ckpt = picked
    if ckpt is None:  # a DeepSpeed checkpoint folder: keep the whole log
        return str(path), 2**62
    check_same_experiment(config_to_yaml(cfg), ckpt, path)
    return str(path), int(ckpt["global_step"])


def _tidy(ckpt_dir: Path, ckpt_path: str | None) -> None:
    """Remove killed saves' staging files; set an unusable last.ckpt aside when resuming from the one
    before it (the next save would otherwise replace the checkpoint resumed from)."""
    from dskd.training.checkpoints import previous_path, remove_staging

    for path in remove_staging(ckpt_dir, ckpt_dir.parent):
        log.warning("note: removed %s (the staging file of a checkpoint save that was killed)", path)
    last = ckpt_dir / "last.ckpt"
    if ckpt_path == str(previous_path(last)) and last.is_file():
        os.replace(last, last.with_name("last.ckpt.unusable"))


def _fit(
    cfg: ExperimentConfig, trainer, module, dm, ckpt_path: str | None, export: bool, t0: float
) -> dict[str, Any]:
    """Fit (from ``ckpt_path`` if given), validate, export; the summary of :func:`train`."""
    from dskd.core.io import write_json_atomic
    from dskd.tracking.session import finish_wandb
    from dskd.training.callbacks import CheckpointOnInterrupt
    from dskd.training.loggers import wandb_experiment
    from dskd.training.resume import has_validation, resumable

    rdir = run_dir(cfg)
    ckpt_dir = rdir / "checkpoints"
    wrapped = resumable(dm)
    try:
        trainer.fit(module, datamodule=wrapped, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit as e:  # Lightning's SIGTERMException (also after Ctrl-C): the callback saved last.ckpt
        from lightning.pytorch.utilities.exceptions import SIGTERMException

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
            from dskd.models.export import export_checkpoint

            summary["export_dir"] = str(export_checkpoint(ckpt_dir / "last.ckpt", rdir / "export"))
        summary["wall_time_s"] = round(time.perf_counter() - t0, 2)
        write_json_atomic(rdir / "summary.json", summary)
        if cfg.logging.wandb:
            from dskd.tracking.artifacts import log_training

            log_training(wandb_experiment(trainer), cfg, summary["export_dir"], trainer.global_step)
    finish_wandb()
    return summary
