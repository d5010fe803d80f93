"""`dskd continuations build CONFIG [key=value ...]`: the teacher's continuations (data.targets=teacher)."""

from __future__ import annotations

import argparse
import json

from dskd.commands import add_config_arguments, load_stage_config

HELP = "Generate the teacher's greedy continuations that data.targets=teacher trains on."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build",
        help="run the teacher greedily after every training and validation prompt, write continuations_dir",
        description="Writes one file per continuation length (data.teacher_new_tokens, or a source's own) "
        "to data.continuations_dir, for the prompts the runs of CONFIG read with each seed; files already "
        "there are kept. `dskd train` runs this stage itself on one process and refuses to start several "
        "without it; `dskd reproduce` and `dskd ablate` run it as a stage. Run under torchrun or srun to "
        "generate with several processes (each on its own GPU). See docs/data.md.",
    )
    add_config_arguments(build)
    build.add_argument(
        "--seeds", type=int, nargs="+", help="seeds whose runs' prompts to cover (default: the config's seed)"
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_stage_config(args)  # a bad config fails before the heavy imports
    from dskd.core.devices import launcher_group, rank_world
    from dskd.data.continuations import build

    with launcher_group():  # torchrun / srun: every process generates a share
        out, stats = build(cfg, args.seeds)
        first = rank_world()[0] == 0
    if first:
        print(json.dumps(stats, indent=2))
        print(f"teacher continuations written to {out}")
    return 0
