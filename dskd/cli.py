"""`dskd <stage>`: the command-line entry point (also `python -m dskd`).

Each stage lives in ``dskd/commands/<stage>.py`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; those modules import heavy libraries only inside ``run`` so that ``--help``
stays fast. User errors (:class:`~dskd.errors.DSKDError`) print one paragraph and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dskd import __version__
from dskd.errors import DSKDError

STAGES = [
    "assets",
    "lexicon",
    "senses",
    "cache",
    "train",
    "export",
    "eval",
    "reproduce",
    "slurm",
    "ablate",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dskd",
        description="Decoder-based Sense Knowledge Distillation. Stages run in the order listed; "
        "each reads an experiment YAML (overridable with key=value) and writes a versioned artifact.",
    )
    parser.add_argument("--version", action="version", version=f"dskd {__version__}")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name in STAGES:
        module = importlib.import_module(f"dskd.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _print_error(message: str) -> None:
    print(f"dskd: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except DSKDError as e:
        _print_error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        _print_error("interrupted.")
        return 130
