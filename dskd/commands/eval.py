"""`dskd eval`: evaluate the teacher and students; write results and tables.

Exit status 0 when every task was evaluated, 3 (:data:`dskd.evaluation.run.UNAVAILABLE_EXIT`, from the
first process) when it finished but some tasks were left out because their asset could not be had.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dskd.commands import add_config_arguments, add_overwrite_argument, load_stage_config

HELP = "Evaluate the teacher and students; write results.json, table.md/csv and plots."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a model to evaluate (repeatable; NAME may end in @SEED). Default: eval.models, else the "
        "teacher plus the students exported under runs_dir.",
    )
    add_overwrite_argument(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    cfg = load_stage_config(args)  # a bad config fails before the heavy imports
    from dskd.evaluation.run import (
        discover_models,
        evaluate,
        parse_models,
        report_unavailable,
        students,
        unavailable_tasks,
    )

    entries = args.model or cfg.eval.models
    models = parse_models(entries) if entries else discover_models(cfg.teacher.model, cfg.runs_dir)
    if not students(models):
        print(
            f"[eval] no students to evaluate: none given and no exported student under "
            f"{cfg.runs_dir}/*/seed-*/export; evaluating the teacher only. Train students first "
            "(`dskd train CONFIG`) or pass --model NAME=PATH.",
            file=sys.stderr,
        )
    from dskd.core.devices import launcher_group, rank_world

    with launcher_group() as together:  # torchrun / srun: the models are dealt to the processes
        records = evaluate(cfg, models, overwrite=args.overwrite, together=together)
        if rank_world()[0] != 0:
            return 0
    print(f"[eval] {len(records)} results for {len(models)} models in {cfg.eval.output_dir}")
    print((Path(cfg.eval.output_dir) / "table.md").read_text(encoding="utf-8"))
    return report_unavailable(unavailable_tasks(cfg.eval.output_dir))
