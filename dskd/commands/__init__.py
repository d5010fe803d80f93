"""One module per CLI stage; see :mod:`dskd.cli`."""

from __future__ import annotations

import argparse
import math


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The common `CONFIG.yaml key=value ...` arguments of a stage."""
    parser.add_argument("config", help="experiment YAML, e.g. experiments/tiny/dskd.yaml")
    parser.add_argument(
        "overrides", nargs="*", default=[], metavar="key=value", help="config overrides, e.g. seed=1"
    )  # a default: argparse would otherwise call the optional overrides required in its usage error


def positive_number(text: str) -> float:
    """An argparse type: a finite number above 0 (``nan``, ``inf`` and ``0`` are refused by name)."""
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from e
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number above 0")
    return value


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace an output folder that holds something other than this stage's artifact."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the output folder even if it holds files not written by this stage (never one that "
        "holds the stage's inputs)",
    )


def load_stage_config(args: argparse.Namespace):
    from dskd.config.loading import load_config

    return load_config(args.config, args.overrides)
