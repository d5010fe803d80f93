"""`dskd reproduce`: run the whole pipeline of a preset and write its tables and plots.

Exit status 0 when every stage and eval task ran, 2 when a training asset cannot be had (before any
stage) or another user error, 3 (:data:`dskd.evaluation.run.UNAVAILABLE_EXIT`) when it finished but
some eval tasks were left out because their asset could not be had.
"""

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
        "--rehearse",
        action="store_true",
        help="run the preset as written on CPU with 2 processes, a random teacher of its family and "
        "offline stand-ins of its hub data (prints what it replaces; docs/training.md)",
    )
    parser.add_argument(
        "overrides", nargs="*", default=[], metavar="key=value", help="overrides applied to every config"
    )


def run(args: argparse.Namespace) -> int:
    from dskd.core.errors import ConfigError
    from dskd.evaluation.run import report_unavailable
    from dskd.launch.reproduce import preset_configs, reproduce

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}.")
    seeds = list(range(args.seeds))
    overrides = list(args.overrides)
    as_written = preset_configs(args.preset, seeds, overrides)  # validated before anything runs
    if args.rehearse:
        from dskd.launch.rehearsal import rehearsal_overrides

        overrides = [*rehearsal_overrides(args.preset, as_written, overrides), *overrides]
    result = reproduce(preset_configs(args.preset, seeds, overrides), force=args.force)
    return report_unavailable(result["unavailable"])
