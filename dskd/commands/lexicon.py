"""`dskd lexicon build CONFIG [key=value ...]`: build the synonym/antonym lexicon mapped onto a tokenizer."""

from __future__ import annotations

import argparse
import json

from dskd.commands import add_config_arguments, add_overwrite_argument, load_stage_config

HELP = "Build the synonym/antonym lexicon mapped onto a tokenizer."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="write the lexicon artifact to lexicon.output_dir")
    add_config_arguments(build)
    add_overwrite_argument(build)


def run(args: argparse.Namespace) -> int:
    cfg = load_stage_config(args)  # a bad config fails before the heavy imports
    from dskd.lexicon.build import build

    out, stats = build(cfg, overwrite=args.overwrite)
    print(json.dumps(stats, indent=2))
    print(f"lexicon written to {out} in {stats['build_seconds']} s")
    return 0
