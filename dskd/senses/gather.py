"""Teacher hidden states keyed by the next token they predict, gathered over a corpus into reservoirs.

``H_T[p]`` is the last hidden state after the final norm (the LM-head input): the backbone's
``last_hidden_state`` (for Llama in transformers 5 this equals ``hidden_states[-1]`` of
``output_hidden_states=True``; tests check ``lm_head(H) == logits``). Keys: ``predicted`` =
argmax of the teacher's logits at p, ``observed`` = y[p+1]. Positions with no next token in the
sequence are skipped in both modes, so both key the same positions.

:func:`gather` streams each source's texts through the teacher into one uniform reservoir per source
and key; under several processes each rank reads every ``world``-th document and
:func:`merge_across_ranks` merges the reservoirs exactly (see :mod:`dskd.senses.reservoir`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dskd.core.devices import rank_world
from dskd.core.progress import progress_bar
from dskd.corpora.sources import iter_documents
from dskd.senses.config import SensesConfig
from dskd.senses.reservoir import KeyedReservoir


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


@dataclass(frozen=True)
class GatherSettings:
    """How :func:`gather` reads the corpus (:meth:`from_config` takes them from ``senses:``)."""

    keying: str
    """predicted (teacher argmax) | observed (the next token)."""
    max_length: int
    """Tokens per window fed to the teacher."""
    batch_tokens: int
    """Padded tokens per teacher forward."""
    cap_per_source: int | Sequence[int]
    """The reservoir size per key, one for all sources or one per source."""
    max_tokens: int | None = None
    """Stop after this many tokens over all ranks (None: the whole corpus)."""
    seed: int = 0
    """Seed of the reservoir priorities."""

    @classmethod
    def from_config(cls, senses: SensesConfig, seed: int) -> GatherSettings:
        return cls(
            keying=senses.keying,
            max_length=senses.max_length,
            batch_tokens=senses.batch_size * senses.max_length,
            cap_per_source=[src.reservoir_cap or senses.cap_per_source for src in senses.sources],
            max_tokens=senses.max_tokens,
            seed=seed,
        )


@dataclass
class GatherResult:
    """Per-source reservoirs plus what the stats need."""

    reservoirs: list[KeyedReservoir]
    occurrences: torch.Tensor
    """[vocab] observed next-token counts over the corpus."""
    tokens: int = 0
    positions: int = 0
    fingerprint: int = 0
    """XOR of :func:`corpus_fingerprint` over the documents read."""
    seconds: float = 0.0
    hidden_size: int = 0
    extra: dict = field(default_factory=dict)

    def merge(self, other: GatherResult) -> None:
        for mine, theirs in zip(self.reservoirs, other.reservoirs, strict=True):
            mine.merge(theirs)
        self.occurrences = self.occurrences + other.occurrences
        self.tokens += other.tokens
        self.positions += other.positions
        self.fingerprint ^= other.fingerprint
        self.seconds = max(self.seconds, other.seconds)


def _windows(
    docs: Iterable[tuple[int, str]], tokenizer, max_length: int, chunk: int = 1024
) -> Iterator[tuple[list[int], tuple[int, int]]]:
    """(window ids, (document index, first token)) of each (index, text) document."""
    buf: list[tuple[int, str]] = []

    def flush() -> Iterator[tuple[list[int], tuple[int, int]]]:
        encoded = tokenizer([text for _, text in buf], add_special_tokens=True)["input_ids"]
        for (index, _), ids in zip(buf, encoded):
            for w, window in enumerate(token_windows(ids, max_length)):
                yield window, (index, w * max_length)

    for doc in docs:
        buf.append(doc)
        if len(buf) >= chunk:
            yield from flush()
            buf = []
    if buf:
        yield from flush()


def corpus_fingerprint(source: int, index: int, text: str) -> int:
    """A document's share of the corpus fingerprint; the fingerprint XORs them, so it does not depend
    on which process read which document."""
    digest = hashlib.sha256(f"{source}:{index}:".encode() + text.encode("utf-8")).digest()
    return int.from_bytes(digest, "big")


def gather(
    model,
    tokenizer,
    sources: Sequence[Iterable[str]],
    settings: GatherSettings,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> GatherResult:
    """Stream each source's texts through the teacher; one uniform reservoir per source and key.

    ``sources`` are iterables of texts; ``shard`` = (rank, world): this rank takes texts
    ``rank, rank + world, ...`` of each. Each row's priority is a hash of its position in the corpus
    (:func:`position_priorities`), so without ``settings.max_tokens`` the merged reservoirs of any
    number of ranks equal one process's.
    """
    rank, world = shard
    device = next(model.parameters()).device
    vocab = model.get_output_embeddings().weight.shape[0]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    cap = settings.cap_per_source
    caps = [cap] * len(sources) if isinstance(cap, int) else list(cap)
    if len(caps) != len(sources):
        raise ValueError(f"{len(caps)} reservoir caps for {len(sources)} sources")
    res = GatherResult([KeyedReservoir(cap) for cap in caps], torch.zeros(vocab, dtype=torch.long))
    seen = torch.zeros(vocab, dtype=torch.bool)
    budget = None if settings.max_tokens is None else max(1, settings.max_tokens // world)
    t0 = time.perf_counter()
    bar = progress_bar(
        total=budget, unit="tok", unit_scale=True, desc="gather", disable=not progress or rank != 0
    )
    for s, texts in enumerate(sources):
        docs = ((i, t) for i, t in enumerate(texts) if i % world == rank)
        for ids, mask, tags in length_sorted_batches(
            _windows(_fingerprinted(docs, s, res), tokenizer, settings.max_length), settings.batch_tokens, pad
        ):
            if budget is not None and res.tokens >= budget:
                break
            kd = keyed_states(model, ids.to(device), mask.to(device), settings.keying)
            keys, observed = kd.keys.cpu(), kd.observed.cpu()
            res.reservoirs[s].add(keys, kd.rows, position_priorities(settings.seed, s, tags, mask))
            res.occurrences += torch.bincount(observed, minlength=vocab)[:vocab]
            seen[keys] = True
            n = int(mask.sum())
            res.tokens += n
            res.positions += len(keys)
            res.hidden_size = kd.rows.shape[-1]
            bar.update(n)
            bar.set_postfix(keys=int(seen.sum()), refresh=False)
    bar.close()
    res.seconds = time.perf_counter() - t0
    return res


def _fingerprinted(docs: Iterable[tuple[int, str]], source: int, res: GatherResult):
    """Pass (index, text) documents through, folding each into ``res.fingerprint`` as it is read."""
    for index, text in docs:
        res.fingerprint ^= corpus_fingerprint(source, index, text)
        yield index, text


def gather_from_config(
    model, tokenizer, senses: SensesConfig, seed: int, shard: tuple[int, int] = (0, 1), progress: bool = False
) -> GatherResult:
    """This rank's reservoirs over ``senses.sources`` with the section's settings."""
    return gather(
        model,
        tokenizer,
        [(doc.text for doc in iter_documents([src], tokenizer, seed=seed)) for src in senses.sources],
        GatherSettings.from_config(senses, seed),
        shard,
        progress,
    )


def merge_across_ranks(res: GatherResult) -> GatherResult:
    """On rank 0: every rank's reservoirs merged into its own, received one rank at a time (rank 0
    holds its sample and one other at once); on the other ranks: their own result, after sending it.
    The identity without torch.distributed."""
    rank, world = rank_world()
    if world == 1:
        return res
    for r in res.reservoirs:
        r.compact()
    for src in range(1, world):
        if rank == src:
            dist.send_object_list([res], dst=0)
        elif rank == 0:
            box: list = [None]
            dist.recv_object_list(box, src=src)
            res.merge(box[0])
    return res
