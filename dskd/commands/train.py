"""`dskd train`: distil a student with KD or DSKD."""

from __future__ import annotations

import argparse
import json

from dskd.commands import add_config_arguments, load_stage_config

HELP = "Distil a student with KD or DSKD."
DESCRIPTION = (
    "Distil a student with KD or DSKD. What the run reads and lacks is built first, each by its own "
    "stage with its progress line and stamp: the teacher's continuations (data.targets=teacher, `dskd "
    "continuations build`) and the teacher cache (teacher.mode=cached, `dskd cache build`). Processes a "
    "launcher started together (torchrun, srun) do not build them: they stop with the command that does. "
    "See docs/training.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    add_config_arguments(parser)
    parser.add_argument("--no-export", action="store_true", help="skip writing the Hugging Face folder")


def run(args: argparse.Namespace) -> int:
    cfg = load_stage_config(args)  # a bad config fails before Lightning and the models load
    from dskd.core.devices import check_accelerator

    check_accelerator(cfg.trainer.accelerator)  # no GPU for trainer.accelerator=gpu: one line, in seconds
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from dskd.training.run import train

    summary = train(cfg, export=not args.no_export)
    if rank_zero_only.rank == 0:  # one summary, not one per process
        print(json.dumps(summary, indent=2, sort_keys=True))
    return 0
