"""Config of evaluation (`dskd eval`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvalConfig:
    output_dir: str = "results/${family}"
    """Where results.json, table.md and plots go."""
    tasks: list[str] = field(default_factory=lambda: ["bigbench", "wic", "wsd", "simlex", "wordsim", "perplexity"])
    """Benchmarks to run."""
    max_items: int | None = 200
    """Items per task (None: all)."""
    batch_size: int = 8
