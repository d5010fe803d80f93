"""A mergeable per-key uniform reservoir sample.

Every offered row gets an independent uniform random priority; a key keeps the ``cap`` rows with
the highest priorities. That is a uniform sample without replacement of the key's rows, and it
merges exactly: the sample of a union of streams is the top-``cap`` of the union of their samples.
So per-rank (or per-source) reservoirs combine into the same distribution as one pass over all data.
"""

from __future__ import annotations

import torch


class KeyedReservoir:
    """Up to ``cap`` uniformly sampled rows per integer key, kept as flat tensors on the CPU."""

    def __init__(self, cap: int, compact_every: int = 1 << 16):
        if cap < 1:
            raise ValueError(f"reservoir cap must be >= 1, got {cap}")
        self.cap = cap
        self.compact_every = compact_every
        self.keys = torch.empty(0, dtype=torch.long)
        self.priorities = torch.empty(0, dtype=torch.float64)
        self.rows: torch.Tensor | None = None
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._pending_n = 0
        self._threshold = torch.empty(0, dtype=torch.float64)  # per key: lowest kept priority when full

    def add(self, keys: torch.Tensor, rows: torch.Tensor, priorities: torch.Tensor) -> None:
        """Offer rows [n, d] under keys [n] with priorities [n] (uniform in [0, 1))."""
        keys = keys.reshape(-1).long().cpu()
        priorities = priorities.reshape(-1).double().cpu()
        if len(self._threshold):
            known = keys < len(self._threshold)
            thr = torch.full_like(priorities, -1.0)
            thr[known] = self._threshold[keys[known]]
            keep = priorities > thr
            keys, priorities, rows = keys[keep], priorities[keep], rows[keep.to(rows.device)]
        if len(keys) == 0:
            return
        self._pending.append((keys, priorities, rows.cpu()))
        self._pending_n += len(keys)
        if self._pending_n >= max(self.compact_every, len(self.keys)):
            self.compact()

    def merge(self, other: KeyedReservoir) -> None:
        """Absorb another reservoir's rows (its cap may differ; this one's cap applies)."""
        other.compact()
        if other.rows is not None and len(other.keys):
            self.add(other.keys, other.rows, other.priorities)
        self.compact()

    def compact(self) -> None:
        """Keep only the top-``cap`` rows per key; rows end up sorted by key, then priority (desc)."""
        if not self._pending:
            return
        parts = [(self.keys, self.priorities, self.rows)] if self.rows is not None else []
        parts += self._pending
        keys = torch.cat([p[0] for p in parts])
        prio = torch.cat([p[1] for p in parts])
        rows = torch.cat([p[2] for p in parts])
        self._pending, self._pending_n = [], 0
        order = torch.argsort(prio, descending=True, stable=True)
        order = order[torch.argsort(keys[order], stable=True)]
        keys, prio = keys[order], prio[order]
        uniq, counts = torch.unique_consecutive(keys, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(keys)) - torch.repeat_interleave(starts, counts)
        keep = rank < self.cap
        self.keys, self.priorities, self.rows = keys[keep], prio[keep], rows[order[keep]]
        size = int(uniq.max()) + 1
        if size > len(self._threshold):
            grown = torch.full((size,), -1.0, dtype=torch.float64)
            grown[: len(self._threshold)] = self._threshold
            self._threshold = grown
        full = counts >= self.cap
        self._threshold[uniq[full]] = prio[starts[full] + self.cap - 1]

    def __len__(self) -> int:
        self.compact()
        return len(self.keys)

    def grouped(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(unique keys [n_keys], rows per key [n_keys], rows [N, d] grouped by key in that order)."""
        self.compact()
        if self.rows is None:
            return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), torch.empty(0, 0)
        uniq, counts = torch.unique_consecutive(self.keys, return_counts=True)
        return uniq, counts, self.rows
