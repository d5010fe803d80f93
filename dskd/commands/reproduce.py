"""`dskd reproduce`: run the whole pipeline of a preset and write its tables and plots."""

from __future__ import annotations

import argparse

HELP = "Run the whole pipeline of a preset (lexicon, senses, KD + DSKD training, eval) and write its tables."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default="tiny",
        help="a packaged preset (tiny, smoke, paper-llama3, paper-mistral) or a folder (experiments/tiny)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds (0..N-1); >1 gives mean ± std")
    parser.add_argument("--force", action="store_true", help="redo stages even when up to date")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the preset end to end on CPU with a tiny random stand-in teacher and offline data",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to every config")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dskd.errors import ConfigError
    from dskd.launch.reproduce import dry_run_overrides, preset_configs, reproduce, standin_teacher

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}.")
    seeds = list(range(args.seeds))
    overrides = list(args.overrides)
    preset_configs(args.preset, seeds, overrides)  # validate the preset as written before anything runs
    if args.dry_run:
        teacher = standin_teacher(Path("artifacts/dry-run/standin-teacher"))
        overrides = [*dry_run_overrides(args.preset, teacher), *overrides]
    reproduce(preset_configs(args.preset, seeds, overrides), force=args.force)
    return 0
