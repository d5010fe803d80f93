"""Contextual word representations: the mean last-layer hidden state over the tokens of a character span."""

from __future__ import annotations

from typing import Any

import torch

from dskd.core.progress import progress_bar


@torch.no_grad()
def embed_spans(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    spans: list[tuple[int, int]],
    batch_size: int = 32,
    desc: str = "embed",
) -> torch.Tensor:
    """``[N, d]`` float32: for each text, the mean last-layer hidden state of the tokens overlapping its span.

    The last layer is the decoder's output after its final norm (what the LM head reads), computed
    without the LM head.

    Tokens overlap ``(start, end)`` when their character offsets intersect it; a span no token
    overlaps (it cannot happen for non-empty spans inside the text) raises ``ValueError``.
    """
    if len(texts) != len(spans):
        raise ValueError(f"{len(texts)} texts but {len(spans)} spans")
    out = []
    device = next(model.parameters()).device
    for i in progress_bar(
        range(0, len(texts), batch_size), desc=desc, leave=False, disable=len(texts) <= batch_size
    ):
        chunk, chunk_spans = texts[i : i + batch_size], spans[i : i + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping")
        hidden = model.base_model(**enc.to(device)).last_hidden_state.float().cpu()
        starts = torch.tensor([s for s, _ in chunk_spans])[:, None]
        ends = torch.tensor([e for _, e in chunk_spans])[:, None]
        inside = (offsets[..., 0] < ends) & (offsets[..., 1] > starts) & enc["attention_mask"].cpu().bool()
        inside &= offsets[..., 1] > offsets[..., 0]
        counts = inside.sum(1)
        if (counts == 0).any():
            bad = int((counts == 0).nonzero()[0, 0])
            raise ValueError(f"no token covers span {chunk_spans[bad]} of {chunk[bad]!r}")
        out.append((hidden * inside[..., None]).sum(1) / counts[:, None])
    return torch.cat(out)


def cosine_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two ``[N, d]`` tensors."""
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)
