"""``logging.example_ids``: which training examples each process took, one file per rank.

``<run>/examples/rank-<R>.tsv`` gets one line per training sequence: epoch, global step and the
sequence's id (the first 16 hex digits of a BLAKE2b hash of its non-padding token ids), so that the
examples of the ranks can be compared after a run (`dskd reproduce --rehearse` checks that they are
disjoint). A resumed run appends.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np


def sequence_ids(input_ids: Any, attention_mask: Any) -> list[str]:
    """The id of each row: a hash of its token ids where the attention mask is 1."""
    ids, mask = np.asarray(input_ids.cpu()), np.asarray(attention_mask.cpu()).astype(bool)
    return [
        hashlib.blake2b(row[m].astype(np.int64).tobytes(), digest_size=8).hexdigest()
        for row, m in zip(ids, mask)
    ]


def read_example_ids(run: Path) -> dict[int, list[tuple[int, int, str]]]:
    """rank -> [(epoch, step, id), ...] from ``run/examples/``."""
    out = {}
    for path in sorted((Path(run) / "examples").glob("rank-*.tsv")):
        rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line]
        out[int(path.stem.removeprefix("rank-"))] = [(int(e), int(s), i) for e, s, i in rows]
    return out


class ExampleIds(pl.Callback):
    """Append the ids of every training batch's sequences to ``<run>/examples/rank-<global rank>.tsv``."""

    def __init__(self, run: Path) -> None:
        self.folder = Path(run) / "examples"

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = [
            f"{trainer.current_epoch}\t{trainer.global_step}\t{i}\n"
            for i in sequence_ids(batch["input_ids"], batch["attention_mask"])
        ]
        with open(self.folder / f"rank-{trainer.global_rank}.tsv", "a", encoding="utf-8") as f:
            f.writelines(lines)
