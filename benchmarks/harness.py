"""`make bench`: run every benchmark of the project and write one report.

Each benchmark is a function ``bench_<name>(quick: bool) -> list[Figure]`` in the module of
``benchmarks/`` named after the stage it measures, registered in :data:`BENCHMARKS`. A figure is
compared with a baseline measured in the same run (the machines are shared and noisy, so only
ratios mean something). Output: ``summary.json`` and ``summary.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from dskd.core.io import write_json_atomic, write_text_atomic


@dataclass
class Figure:
    """One measured figure with the baseline it is compared against and its goal."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    goal: str | None = None
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline


BENCHMARKS: list[str] = [
    # "module:function", each returning list[Figure]
    "benchmarks.data:bench_data_throughput",
    "benchmarks.shards:bench_shard_reads",
    "benchmarks.losses:bench_chunked_kd",
    "benchmarks.senses:bench_kmeans",
    "benchmarks.senses:bench_dictionary",
    "benchmarks.lexicon:bench_lexicon_build",
    "benchmarks.training:bench_step_time",
    "benchmarks.teacher_cache:bench_cached_training",
    "benchmarks.cache_checks:bench_cache_checks",
    "benchmarks.evaluation:bench_paper_batching",
    "benchmarks.on_policy:bench_on_policy_step_time",
    "benchmarks.paper_shape:bench_paper_shape",
]


def run_all(names: list[str] | None, quick: bool) -> tuple[list[Figure], list[str]]:
    figures: list[Figure] = []
    failures: list[str] = []
    for spec in BENCHMARKS:
        mod, fn = spec.split(":")
        if names and not any(n in spec for n in names):
            continue
        print(f">>> bench {spec}", flush=True)
        t0 = time.perf_counter()
        try:
            figures.extend(getattr(importlib.import_module(mod), fn)(quick=quick))
        except Exception:  # report and carry on: one broken benchmark must not hide the others
            failures.append(f"{spec}: {traceback.format_exc(limit=3)}")
            print(failures[-1], file=sys.stderr)
        print(f"    done in {time.perf_counter() - t0:.1f} s", flush=True)
    return figures, failures


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}"


def to_markdown(figures: list[Figure]) -> str:
    lines = [
        "| figure | value | unit | baseline | baseline value | ratio | goal | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        met = "-" if f.met is None else ("yes" if f.met else "no")
        lines.append(
            f"| {f.name} | {_fmt(f.value)} | {f.unit} | {f.baseline_name or '-'} | {_fmt(f.baseline)} "
            f"| {_fmt(f.ratio)} | {f.goal or '-'} | {met} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--only", nargs="*", help="substrings of benchmark names to run")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test of the harness)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    figures, failures = run_all(args.only, args.quick)
    out = Path(args.out)
    summary = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "wall_s": time.perf_counter() - t0,
        "figures": [dict(asdict(f), ratio=f.ratio) for f in figures],
        "failures": failures,
    }
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "summary.md", to_markdown(figures))
    print(to_markdown(figures))
    print(json.dumps({"wall_s": round(summary["wall_s"], 1), "failures": len(failures)}))
    return 1 if failures else 0
