"""The evaluation suite: each benchmark's items are built once (seeded), then every model is scored on them.

The benchmarks come from the registry (:mod:`dskd.evaluation.benchmarks`), one object each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dskd.evaluation.benchmarks import Benchmark, Building, Score, Scoring, benchmark
from dskd.evaluation.config import EvalConfig

__all__ = ["Score", "Suite", "build_suite", "check_tasks", "score_model"]


@dataclass
class Suite:
    """The configured benchmarks with their items, built once for all models."""

    cfg: EvalConfig
    items: list[tuple[Benchmark, Any]] = field(default_factory=list)

    @property
    def needs_teacher(self) -> bool:
        """Some benchmark scores students against the teacher (load it for them)."""
        return any(b.needs_teacher for b, _ in self.items)


def check_tasks(tasks: list[str]) -> None:
    """Reject unknown benchmark names with the list of valid ones."""
    for t in tasks:
        benchmark(t)


def build_suite(cfg: EvalConfig, tokenizer: Any, task_dir: Path) -> Suite:
    """Build the items of every configured benchmark (the teacher's tokenizer cuts the held-out blocks)."""
    benchmarks = [benchmark(t) for t in cfg.tasks]
    building = Building(cfg, tokenizer, task_dir)
    return Suite(cfg, [(b, b.build(building)) for b in benchmarks])


def score_model(suite: Suite, model: Any, tokenizer: Any, teacher: Any | None) -> list[Score]:
    """All benchmark scores of one model; ``teacher`` (None for the teacher itself) for agreement and KL."""
    scoring = Scoring(model, tokenizer, teacher, suite.cfg)
    return [score for b, items in suite.items for score in b.score(items, scoring)]
