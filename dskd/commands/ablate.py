"""`dskd ablate SWEEP.yaml [key=value ...]`: run an ablation grid locally, write its table and plot."""

from __future__ import annotations

import argparse
import json

HELP = "Run an ablation grid (a W&B sweep file) locally and write its summary table and plot."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="W&B grid sweep file, e.g. experiments/sweeps/tiny_kappa_weight.yaml")
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="key=value",
        help="overrides applied to every grid point, e.g. seed=1",
    )
    parser.add_argument(
        "--base", metavar="CONFIG", help="base experiment YAML (default: the one in the sweep's command)"
    )
    parser.add_argument(
        "--out", metavar="DIR", help="where the table and plot go (default: results/ablations/NAME)"
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="only build the lexicon and sense dictionaries the grid needs (run before a W&B agent)",
    )
    parser.add_argument(
        "--summary-only", action="store_true", help="train nothing; summarise the runs there are"
    )
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="create the W&B report of the ablation group (needs W&B online)",
    )
    parser.add_argument(
        "--export", action="store_true", help="also export each student as a Hugging Face folder"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars while building artifacts"
    )


def run(args: argparse.Namespace) -> int:
    from dskd.launch import ablate

    sweep = ablate.load_sweep(args.sweep)
    points = ablate.point_configs(sweep, args.overrides, base=args.base)
    out = args.out or ablate.default_out_dir(sweep)
    if args.dashboard:
        print(f"W&B report: {ablate.create_dashboard(sweep, points, out)}")
        return 0
    print(f"=== ablation {sweep.name}: {len(points)} points over {', '.join(sweep.knobs)}", flush=True)
    if not args.summary_only:
        ablate.prepare(points, progress=not args.no_progress)
        if args.prepare:
            return 0
        ablate.run_points(points, export=args.export)
    paths = ablate.summarise(sweep, points, out)
    print(open(paths["table"]).read())
    print(json.dumps(paths, indent=2))
    return 0
