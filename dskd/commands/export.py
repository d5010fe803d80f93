"""`dskd export`: export a checkpoint as a plain Hugging Face model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from dskd.commands import add_overwrite_argument

HELP = "Export a checkpoint as a plain Hugging Face model folder."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        help="a checkpoint of `dskd train`, e.g. runs/tiny/tiny-dskd/seed-0/checkpoints/last.ckpt",
    )
    parser.add_argument("out_dir", help="folder to write (model, tokenizer, model card, export_meta.json)")
    add_overwrite_argument(parser)
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="also upload the folder to this Hugging Face model repo (private when created; off by default)",
    )


def run(args: argparse.Namespace) -> int:
    from dskd.config.loading import load_config
    from dskd.corpora.sources import hub_datasets
    from dskd.models.export import export_checkpoint

    run_config = Path(args.checkpoint).parent / "config.yaml"  # `dskd train` writes it beside its checkpoints
    cfg = load_config(run_config) if run_config.is_file() else None
    datasets = tuple(hub_datasets([*cfg.data.train, *cfg.senses.sources])) if cfg else ()
    out = export_checkpoint(args.checkpoint, args.out_dir, overwrite=args.overwrite, datasets=datasets)
    print(out)
    if args.push_to_hub:
        from dskd.models.card import push_to_hub

        print(push_to_hub(out, args.push_to_hub))
    return 0
