"""`dskd <stage>`: the command-line entry point (also `python -m dskd`).

Each stage lives in ``dskd/commands/<stage>.py`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; those modules import heavy libraries only inside ``run`` so that ``--help``
stays fast. User errors (:class:`~dskd.errors.DSKDError`) print one paragraph and exit with 2;
``--debug`` (or ``DSKD_DEBUG=1``) re-raises them with the full traceback and its cause instead.
``key=value`` overrides may stand anywhere after the config, before or after the flags.

Exit statuses: 0 done; 2 user error (bad config or input, an asset that cannot be had for a stage
that needs it); 3 finished, but some evaluation tasks were unavailable (their asset could not be had;
`dskd eval`, `dskd reproduce`: every other task and stage ran, results.json and the tables name the
missing ones and why); 130 Ctrl-C; 143 SIGTERM (a training run saved its checkpoint; an artifact stage
replaced nothing and removed its temporary files).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import os
import sys

from dskd import __version__
from dskd.core.errors import DSKDError
from dskd.core.stopping import Stopped

STAGES = [
    "config",
    "assets",
    "lexicon",
    "senses",
    "continuations",
    "cache",
    "train",
    "memory",
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
    parser.add_argument(
        "--debug",
        action="store_true",
        default=os.environ.get("DSKD_DEBUG", "") not in ("", "0"),
        help="re-raise errors with the full traceback (also DSKD_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name in STAGES:
        module = importlib.import_module(f"dskd.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _print_error(message: str) -> None:
    print(f"dskd: error: {message}", file=sys.stderr)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``, taking ``key=value`` words that follow a flag as overrides of the stage too.

    argparse fills a stage's ``overrides`` only from the words right after its config; later ones
    (``dskd train CFG --no-export seed=1``) come back unrecognised and are appended here, in order.
    """
    args, extra = parser.parse_known_args(argv)
    stray = [w for w in extra if w.startswith("-") or "=" not in w]
    if extra and (stray or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}{_override_hint(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def _override_hint(words: list[str]) -> str:
    """For ``--a.b value`` or ``--a.b=value`` (LightningCLI's habit): the ``a.b=value`` dskd reads."""
    for i, word in enumerate(words):
        key, sep, value = word.removeprefix("--").partition("=")
        if word.startswith("--") and "." in key:
            if not sep and i + 1 < len(words) and not words[i + 1].startswith("-"):
                value = words[i + 1]
            return f" (config overrides are written key=value, without dashes: {key}={value or 'VALUE'})"
    return ""


def report_crashes() -> None:
    """Print the Python stack when the process dies of SIGBUS or SIGSEGV (faulthandler), instead of
    dying silently: a read of a memory-mapped artifact (teacher cache, sense dictionary) that a `cp`
    truncated between two of :class:`dskd.core.io.MappedFiles`' checks ends so (docs/failure-modes.md)."""
    if not faulthandler.is_enabled():  # pytest's, or PYTHONFAULTHANDLER's, is already on
        with contextlib.suppress(AttributeError, ValueError, OSError):  # a stderr with no file descriptor
            faulthandler.enable()


def main(argv: list[str] | None = None) -> int:
    report_crashes()
    parser = build_parser()
    args = parse_args(parser, argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except DSKDError as e:
        if args.debug:
            raise
        _print_error(str(e))
        return e.exit_code
    except Stopped as e:  # an artifact stage (dskd.core.stopping): what stopped and that nothing was replaced
        if args.debug:
            raise
        _print_error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        _print_error("interrupted.")
        return 130
