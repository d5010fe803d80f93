"""`dskd lexicon`: build the synonym/antonym lexicon mapped onto a tokenizer."""

from __future__ import annotations

import argparse

from dskd.errors import DSKDError

HELP = "Build the synonym/antonym lexicon mapped onto a tokenizer."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise DSKDError("Stage 'lexicon' is not implemented yet (tracked in issue 3).")
