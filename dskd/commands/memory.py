"""`dskd memory CONFIG [key=value ...] --gpus N`: the per-GPU memory a training run needs, before queueing."""

from __future__ import annotations

import argparse

from dskd.commands import add_config_arguments, positive_number

HELP = "Estimate the per-GPU memory of a training run from the teacher's shapes (docs/training.md)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs of the whole job (nodes x GPUs per node)")
    parser.add_argument("--gpu-memory", type=positive_number, default=80.0, help="GB per GPU (default 80)")


def run(args: argparse.Namespace) -> int:
    from dskd.config.loading import load_config
    from dskd.core.errors import ConfigError
    from dskd.models.student import check_depth
    from dskd.training.memory import MemoryInputs, render, teacher_shape

    if args.gpus < 1:
        raise ConfigError(f"--gpus is {args.gpus}; give at least 1 (the GPUs of the whole job).")
    cfg = load_config(args.config, args.overrides)
    if cfg.student.kind != "truncated":
        raise ConfigError("dskd memory estimates student.kind=truncated (the paper's student) only.")
    inputs = MemoryInputs(
        cfg.name,
        cfg.method,
        cfg.teacher,
        cfg.student,
        cfg.trainer,
        cfg.data,
        cfg.loss,
        cfg.senses,
        cfg.lexicon.output_dir,
    )
    shape = teacher_shape(cfg.teacher)
    check_depth(cfg.student.num_layers, shape.layers)  # as training refuses it
    print(render(inputs, shape, args.gpus, args.gpu_memory), end="")
    return 0
