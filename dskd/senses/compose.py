"""Senses of multi-token words (VIDs) composed from their member tokens' senses (docs/method.md §2.1).

Start from the rows of D[t1]; for each next token t_i, match every running row to its L2-nearest
row of D[t_i] and add that row; at the end divide by the number of tokens. A VID gets senses only
when every member token has senses; it has as many senses as its first token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from dskd.senses.dictionary import SenseDictionary


def compose_vids(
    dictionary: SenseDictionary, vid_tokens: Mapping[int, Sequence[int]], chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compose VID senses. Returns (vid keys [n], centroids [n, k, d], counts [n]) for the VIDs
    whose tokens all have senses, in ascending VID order."""
    k, d = dictionary.k, dictionary.hidden_size
    dev, dtype = dictionary.rows.device, dictionary.rows.dtype
    by_len: dict[int, list[tuple[int, Sequence[int]]]] = {}
    for vid, toks in sorted(vid_tokens.items()):
        if len(toks):
            by_len.setdefault(len(toks), []).append((vid, toks))
    keys, cents, counts = [], [], []
    for length, items in sorted(by_len.items()):
        for s in range(0, len(items), chunk):
            part = items[s : s + chunk]
            vids = torch.tensor([v for v, _ in part], dtype=torch.long)
            toks = torch.tensor([list(t) for _, t in part], dtype=torch.long, device=dev)  # [n, length]
            senses, mask = dictionary.lookup(toks)  # [n, length, k, d], [n, length, k]
            ok = mask[:, :, 0].all(1)
            if not ok.any():
                continue
            senses, mask = senses[ok].float(), mask[ok]
            running = senses[:, 0]
            for i in range(1, length):
                dist = torch.cdist(running, senses[:, i])  # [n, k, k]
                dist = dist.masked_fill(~mask[:, i].unsqueeze(1), float("inf"))
                nearest = dist.argmin(2)
                running = running + senses[:, i].gather(1, nearest.unsqueeze(-1).expand(-1, -1, d))
            n_first = mask[:, 0].sum(1)
            running = (running / length) * mask[:, 0].unsqueeze(-1)
            keys.append(vids[ok.cpu()])
            cents.append(running.to(dtype))
            counts.append(n_first)
    if not keys:
        empty = torch.empty(0, dtype=torch.long)
        return empty, torch.empty(0, k, d, dtype=dtype, device=dev), empty.to(dev)
    return torch.cat(keys), torch.cat(cents), torch.cat(counts)
