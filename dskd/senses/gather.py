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
    sequences: Iterable[list[int]], max_tokens: int, pad_id: int, pool: int = 4096
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded (input_ids, attention_mask) batches of at most ``max_tokens`` padded tokens.

    Sequences are read ``pool`` at a time and sorted by length inside the pool, so padding is small.
    """

    def flush(buf: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        buf.sort(key=len)
        i = 0
        while i < len(buf):
            j = i + 1
            while j < len(buf) and (j + 1 - i) * len(buf[j]) <= max_tokens:
                j += 1
            part = buf[i:j]
            width = len(part[-1])
            ids = torch.full((len(part), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(part), width), dtype=torch.long)
            for r, seq in enumerate(part):
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
            yield ids, mask
            i = j

    buf: list[list[int]] = []
    for seq in sequences:
        buf.append(seq)
        if len(buf) >= pool:
            yield from flush(buf)
            buf = []
    if buf:
        yield from flush(buf)
