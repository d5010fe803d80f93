"""`dskd config`: print the resolved experiment config (every key, defaults included) and exit."""

from __future__ import annotations

import argparse

from dskd.commands import add_config_arguments, load_stage_config

HELP = "Print the resolved config (base: chain, overrides and every default) as YAML, and exit."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    print(load_stage_config(args).to_yaml(), end="")
    return 0
