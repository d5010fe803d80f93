"""`dskd cache build CONFIG [key=value ...]`: precompute the teacher's KD targets and hidden states."""

from __future__ import annotations

import argparse
import json

from dskd.commands import add_config_arguments, add_overwrite_argument, load_stage_config

HELP = "Precompute the teacher's KD targets and hidden states for cached training."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build",
        help="run the teacher over the run's sequences and write cache.dir",
        description="Writes the teacher cache of every training and validation sequence the runs of CONFIG "
        "will see, for each seed: KD targets (cache.kd_format: tokens sampled from the teacher at "
        "loss.kd.tau, or top-k log-probs with the tail mass) and hidden states "
        "(cache.hidden_positions: where the sense loss can read them, or everywhere). Train "
        "with teacher.mode=cached to use it (no teacher forward). With data.targets=teacher the teacher's "
        "continuations come first (`dskd continuations build`). `dskd train` builds a missing cache itself "
        "on one process and refuses to start several without it. Run under torchrun to build with several "
        "processes. See docs/teacher_cache.md.",
    )
    add_config_arguments(build)
    add_overwrite_argument(build)
    build.add_argument(
        "--seeds", type=int, nargs="+", help="seeds whose runs the cache covers (default: the config's seed)"
    )
    build.add_argument(
        "--hidden-dtype",
        choices=("float16", "float32", "none"),
        default="float16",
        help="storage of the teacher hidden states: float16 (default), float32 (exact) or none (KD only)",
    )
    build.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    cfg = load_stage_config(args)  # a bad config fails before the heavy imports
    from dskd.core.devices import launcher_group, rank_world
    from dskd.models.shared import StageProcess
    from dskd.teacher_cache.build import build

    with launcher_group() as together:  # torchrun / srun: every process runs the teacher on a share
        process = StageProcess(together=together, progress=not args.no_progress)
        out, stats = build(cfg, args.seeds, args.hidden_dtype, args.overwrite, process=process)
        if rank_world()[0] != 0:
            return 0
    print(json.dumps(stats, indent=2))
    print(f"teacher cache written to {out}")
    return 0
