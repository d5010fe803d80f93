"""`dskd senses`: build the sense dictionary from the teacher's hidden states."""

from __future__ import annotations

import argparse
import json

from dskd.commands import add_config_arguments, add_overwrite_argument, load_stage_config

HELP = "Build the sense dictionary from the teacher's hidden states."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build",
        help="gather teacher hidden states per next-token key, cluster them, compose VIDs, save",
        description="Writes senses.safetensors, meta.json, stats.json and config.yaml to senses.output_dir. "
        "Run under torchrun to gather with several processes.",
    )
    add_config_arguments(build)
    add_overwrite_argument(build)
    build.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    cfg = load_stage_config(args)  # a bad config fails before the heavy imports
    from dskd.core.devices import launcher_group
    from dskd.senses.build import build

    with launcher_group() as together:  # torchrun / srun: every process gathers a shard
        out, stats = build(cfg, progress=not args.no_progress, overwrite=args.overwrite, together=together)
    if stats:
        print(json.dumps(stats, indent=2))
        print(f"sense dictionary written to {out}")
    return 0
