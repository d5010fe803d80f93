"""The evaluation suite: each benchmark's items are built once (seeded), then every model is scored on them.

The benchmarks come from the registry (:mod:`dskd.evaluation.tasks`), one object each. A
benchmark whose asset cannot be had (its build raises :class:`~dskd.errors.AssetError`) is left out
and listed in :attr:`Suite.unavailable` with the reason; the others are built and scored as usual.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dskd.core.errors import AssetError, DSKDError
from dskd.evaluation.config import EvalConfig
from dskd.evaluation.scores import Score
from dskd.evaluation.tasks import Benchmark, Building, Scoring, benchmark

__all__ = ["Score", "Suite", "build_suite", "check_tasks", "score_model"]


@dataclass
class Suite:
    """The configured benchmarks with their items, built once for all models."""

    cfg: EvalConfig
    items: list[tuple[Benchmark, Any]] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    """``task -> reason`` of the configured benchmarks whose assets could not be had (not scored)."""

    @property
    def needs_teacher(self) -> bool:
        """Some benchmark scores students against the teacher (load it for them)."""
        return any(b.needs_teacher for b, _ in self.items)


def check_tasks(tasks: list[str]) -> None:
    """Reject unknown benchmark names with the list of valid ones."""
    for t in tasks:
        benchmark(t)


def build_suite(cfg: EvalConfig, tokenizer: Any, task_dir: Path) -> Suite:
    """Build the items of every configured benchmark (the teacher's tokenizer cuts the held-out blocks).

    A benchmark whose build raises AssetError goes to ``unavailable`` (one ``[eval]`` line on stderr);
    a DSKDError when no benchmark is left.
    """
    building = Building(cfg, tokenizer, task_dir)
    suite = Suite(cfg)
    for b in (benchmark(t) for t in cfg.tasks):
        try:
            suite.items.append((b, b.build(building)))
        except AssetError as e:
            suite.unavailable[b.name] = str(e)
            print(f"[eval] {b.name}: unavailable: {e}", file=sys.stderr, flush=True)
    if not suite.items:
        reasons = " ".join(f"{t}: {r}" for t, r in suite.unavailable.items())
        raise DSKDError(f"None of the eval tasks could be built, so there is nothing to evaluate. {reasons}")
    return suite


def score_model(suite: Suite, model: Any, tokenizer: Any, teacher: Any | None) -> list[Score]:
    """All benchmark scores of one model; ``teacher`` (None for the teacher itself) for agreement and KL."""
    scoring = Scoring(model, tokenizer, teacher, suite.cfg)
    return [score for b, items in suite.items for score in b.score(items, scoring)]
