"""`dskd export`: export a checkpoint as a plain Hugging Face model folder."""

from __future__ import annotations

import argparse

from dskd.commands import add_overwrite_argument

HELP = "Export a checkpoint as a plain Hugging Face model folder."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        help="a checkpoint of `dskd train`, e.g. runs/tiny/tiny-dskd/seed-0/checkpoints/last.ckpt",
    )
    parser.add_argument("out_dir", help="folder to write (model, tokenizer, export_meta.json)")
    add_overwrite_argument(parser)


def run(args: argparse.Namespace) -> int:
    from dskd.models.export import export_checkpoint

    print(export_checkpoint(args.checkpoint, args.out_dir, overwrite=args.overwrite))
    return 0
