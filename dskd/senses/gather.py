"""Teacher hidden states keyed by the next token they predict.

``H_T[p]`` is the last hidden state after the final norm (the LM-head input): the backbone's
``last_hidden_state`` (for Llama in transformers 5 this equals ``hidden_states[-1]`` of
``output_hidden_states=True``; tests check ``lm_head(H) == logits``). Keys: ``predicted`` =
argmax of the teacher's logits at p, ``observed`` = y[p+1]. Positions with no next token in the
sequence are skipped in both modes, so both key the same positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Keyed:
    """Rows gathered from one batch: keys [n], rows [n, d], observed next tokens [n]."""

    keys: torch.Tensor
    rows: torch.Tensor
    observed: torch.Tensor


@torch.no_grad()
def keyed_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, keying: str) -> Keyed:
    """Run the frozen teacher on a right-padded batch and key each position's final hidden state."""
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    h = out.last_hidden_state  # [B, L, d]
    valid = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()  # p has a next token
    rows = h[:, :-1][valid]
    observed = input_ids[:, 1:][valid]
    if keying == "observed":
        keys = observed
    else:
        keys = model.get_output_embeddings()(rows).argmax(-1)
    return Keyed(keys, rows, observed)


def token_windows(token_ids: list[int], max_length: int) -> Iterator[list[int]]:
    """Split a document's tokens into consecutive windows of at most max_length (>= 2 tokens each)."""
    for s in range(0, len(token_ids), max_length):
        window = token_ids[s : s + max_length]
        if len(window) >= 2:
            yield window


def length_sorted_batches(
    sequences: Iterable[tuple[list[int], Any]], max_tokens: int, pad_id: int, pool: int = 4096
) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[Any]]]:
    """Right-padded (input_ids, attention_mask, tags) batches of at most ``max_tokens`` padded tokens.

    ``sequences`` are (token ids, tag) pairs; a batch's tags are those of its rows, in row order.
    Sequences are read ``pool`` at a time and sorted by length inside the pool, so padding is small.
    """

    def flush(buf: list[tuple[list[int], Any]]) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[Any]]]:
        buf.sort(key=lambda item: len(item[0]))
        i = 0
        while i < len(buf):
            j = i + 1
            while j < len(buf) and (j + 1 - i) * len(buf[j][0]) <= max_tokens:
                j += 1
            part = buf[i:j]
            width = len(part[-1][0])
            ids = torch.full((len(part), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(part), width), dtype=torch.long)
            for r, (seq, _) in enumerate(part):
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
            yield ids, mask, [tag for _, tag in part]
            i = j

    buf: list[tuple[list[int], Any]] = []
    for item in sequences:
        buf.append(item)
        if len(buf) >= pool:
            yield from flush(buf)
            buf = []
    if buf:
        yield from flush(buf)


def position_priorities(
    seed: int, source: int, tags: list[tuple[int, int]], mask: torch.Tensor
) -> torch.Tensor:
    """Reservoir priorities in [0, 1) of the keyed positions of a batch (:func:`keyed_states`'s order).

    Row r of the batch is the window of document ``tags[r][0]`` (its index in the source) starting at
    token ``tags[r][1]``. A position's priority is a hash of (seed, source, document, token index), so
    it is the same whichever process reads the document and in whichever batch: merged per-rank
    reservoirs then hold exactly the rows a single process would keep.
    """
    valid = (mask[:, 1:].bool() & mask[:, :-1].bool()).numpy()
    rows, cols = np.nonzero(valid)
    docs = np.array([t[0] for t in tags], dtype=np.uint64)[rows]
    starts = np.array([t[1] for t in tags], dtype=np.uint64)[rows]
    x = np.full(len(rows), seed, dtype=np.uint64) * _PRIME + np.uint64(source)
    x = (x * _PRIME + docs) * _PRIME + starts + cols.astype(np.uint64)
    return torch.from_numpy((_splitmix64(x) >> np.uint64(11)).astype(np.float64) * 2.0**-53)


_PRIME = np.uint64(0x100000001B3)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer (a bijective mix of 64-bit integers; uint64 arithmetic wraps)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
