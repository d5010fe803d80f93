"""Streaming dataset: sharding by (rank, worker), packing to a fixed length, sense sampling, exact resume.

Sharding: the document stream (after the validation hold-out) is dealt round-robin to
``num_shards = world_size * num_workers`` shards: document j goes to shard ``j % num_shards`` and
shard ``rank * num_workers + worker``. Every document is read by exactly one shard, so no duplicates
and no gaps; a shard of a text or JSONL file reads only the paragraphs or lines of its own documents
(:mod:`dskd.corpora.shards`), and tokenizes only those. Each shard shuffles its documents through a
buffer seeded by (seed, epoch, shard).

Packing (one *unit* per document): the document's tokens followed by EOS. Labels are the next token
inside the document, EOS for its last token, and ``IGNORE_INDEX`` on the EOS (no target crosses into another
document). With ``pack`` a sequence holds as many whole units as fit (then right padding); a unit
longer than a sequence is split into sequence-sized pieces (its labels still run across the cut).
Without ``pack`` each unit starts a new sequence. With ``targets=teacher`` a unit is the prompt
followed by the teacher's greedy continuation, labels over all positions, ``IGNORE_INDEX`` on the last token.

Padding (``pad_to``): a batch is right-padded to its longest sequence (``longest``) or to ``seq_len``.
Each shard yields whole batches (dicts of tensors) numbered 0, 1, ...; batch b of shard s holds the
shard's sequences ``b * batch_size ...``, except that with ``pad_to=longest``, ``pack`` off and
``batch_size > 1`` they are bucketed by length: each window of ``BUCKET_BATCHES * batch_size``
consecutive sequences is sorted by length, cut into batches, and those batches come in an order
drawn from (seed, epoch, shard, 2, window). Sequence k of the shard (in stream order) draws its sense
sample from the generator seeded by (seed, epoch, shard, k), whichever batch it lands in. Resume:
``skip[shard]`` batches are regenerated but not emitted.
Metadata keys ``stream_shard``, ``stream_batch``, ``stream_epoch`` ride along for the DataModule to
record consumption (it removes them before the batch reaches the model).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from dskd.core.batch import IGNORE_INDEX, PROMPT_LEN
from dskd.core.errors import DSKDError
from dskd.corpora.config import SourceConfig
from dskd.corpora.shards import shard_documents
from dskd.corpora.sources import Document, SourceStats
from dskd.data.align import span_tokens
from dskd.data.continuations import prompt_key
from dskd.data.sampling import NeighbourTable, SenseDraw, restrict_to_synset, sample_sense_batch
from dskd.data.words import WordKeys

TOKENIZE_CHUNK = 256
"""Documents tokenized per call of the (fast, batched) tokenizer."""
META_KEYS = ("stream_shard", "stream_batch", "stream_epoch")
BUCKET_BATCHES = 64
"""Batches per length-bucketing window: long enough that most batches hold similar lengths, short
enough that a window's sequences stay close in the shuffled stream order."""
PAD_TO = ("longest", "seq_len")


@dataclass
class StreamSpec:
    """Everything a worker needs to rebuild its shard of the stream (picklable)."""

    sources: list[SourceConfig]
    seq_len: int = 128
    batch_size: int = 4
    seed: int = 0
    pack: bool = True
    shuffle_buffer: int = 0
    holdout: str = "none"
    """none (every document) | train (documents not held out) | val (held-out documents)."""
    val_fraction: float = 0.0
    table: NeighbourTable | None = None
    """Lexicon neighbours; None: no sense-loss keys in the batch."""
    width: int = 25
    """Padded number of sense positions M."""
    max_positions: int = 25
    fraction: float = 0.4
    max_neighbours: int = 25
    aligned: bool = False
    """Restrict neighbours of targets with a gold synset to that synset (sense_aligned_neighbours)."""
    teacher_continuations: dict[str, list[int]] | None = None
    """prompt_key(prompt) -> teacher continuation ids (targets=teacher); None: observed targets."""
    prompt_lengths: bool = False
    """Add ``prompt_len`` to each batch (the on-policy prefix, ``dskd.batch.PROMPT_LEN``)."""
    pad_to: str = "longest"
    """longest (a batch is as wide as its longest sequence) | seq_len (every batch is seq_len wide)."""
    word_keys: WordKeys | None = None
    """The teacher's word keys (cross-tokenizer ``method: dskd``: word-keyed sense positions)."""

    @property
    def bucketed(self) -> bool:
        """Whether batches are bucketed by length (see the module doc)."""
        return self.pad_to == "longest" and not self.pack and self.batch_size > 1


@dataclass
class _Unit:
    ids: list[int]
    labels: list[int]
    gold: list[tuple[int, str]] = field(default_factory=list)
    """(label position inside the unit, synset) where the target has a gold synset."""
    prompt: int = 0
    """Leading tokens that are a prompt (QA prompt or teacher-target prompt; 0: none)."""


class PackedStream(IterableDataset):
    """The sequence stream of one rank; DataLoader workers split it further (see module doc)."""

    def __init__(self, spec: StreamSpec, tokenizer, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.spec, self.tokenizer, self.rank, self.world_size = spec, tokenizer, rank, world_size
        self.epoch = 0
        self.skip: dict[int, int] = {}
        """Batches already consumed per shard (resume)."""
        self.rotation = 0
        """Worker i serves shard slot (i + rotation) % num_workers, so a resumed loader keeps the order."""
        self.eos = tokenizer.eos_token_id
        if self.eos is None:
            raise DSKDError("The tokenizer has no EOS token; packing needs one as document separator.")
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.read = SourceStats()
        """What this process read of the sources (``bytes_read``: the file bytes), over all passes."""
        self.tokenized = 0
        """Documents this process tokenized, over all passes."""

    # ------------------------------------------------------------ shards
    def shard(self) -> tuple[int, int]:
        """(this worker's shard, number of shards)."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return self.rank * workers + (worker + self.rotation) % workers, self.world_size * workers

    def documents(self, shard: int, num_shards: int) -> Iterator[Document]:
        """The shard's documents, shuffled (read by :func:`dskd.corpora.shards.shard_documents`)."""
        spec = self.spec
        mine = shard_documents(
            spec.sources,
            self.tokenizer,
            spec.seed,
            (shard, num_shards),
            (spec.holdout, spec.val_fraction),
            self.read,
        )
        if spec.shuffle_buffer > 1:
            mine = shuffled(
                mine, spec.shuffle_buffer, np.random.default_rng([spec.seed, self.epoch, shard, 1])
            )
        return mine

    # ------------------------------------------------------------ units and sequences
    def units(self, docs: Iterator[Document]) -> Iterator[_Unit]:
        teacher = self.spec.teacher_continuations is not None
        backend = self.tokenizer.backend_tokenizer  # the Rust tokenizer: no per-call Python conversion
        while chunk := [d for _, d in zip(range(TOKENIZE_CHUNK), docs)]:
            self.tokenized += len(chunk)
            texts = [d.meta.get("prompt", d.text) if teacher else d.text for d in chunk]
            for doc, text, enc in zip(chunk, texts, backend.encode_batch(texts, add_special_tokens=False)):
                ids = enc.ids
                if teacher:
                    cont = self.spec.teacher_continuations.get(prompt_key(text))
                    if cont is None:
                        raise DSKDError(
                            "A training prompt has no teacher continuation: build the continuations of this "
                            "data again (`dskd continuations build CONFIG`)."
                        )
                    prompt = len(ids)
                    ids = ids + list(cont)
                    yield _Unit(ids, ids[1:] + [IGNORE_INDEX], prompt=prompt)
                    continue
                unit = _Unit(
                    [*ids, self.eos],
                    [*ids[1:], self.eos, IGNORE_INDEX],
                    prompt=prompt_tokens(doc, enc.offsets),
                )
                if self.spec.aligned and doc.meta.get("span") and doc.meta.get("synset"):
                    unit.gold = gold_labels(doc, enc.offsets)
                yield unit

    def sequences(self, units: Iterator[_Unit]) -> Iterator[_Unit]:
        """Fixed-length sequences (unpadded; see module doc for the packing rule)."""
        L = self.spec.seq_len
        cur = _Unit([], [])
        for u in units:
            if cur.ids and (len(cur.ids) + len(u.ids) > L or not self.spec.pack):
                yield cur
                cur = _Unit([], [])
            while len(u.ids) > L:
                yield _Unit(u.ids[:L], u.labels[:L], [(p, s) for p, s in u.gold if p < L], min(u.prompt, L))
                u = _Unit(u.ids[L:], u.labels[L:], [(p - L, s) for p, s in u.gold if p >= L])
            if not cur.ids:  # a sequence's prompt is that of the unit it starts with
                cur.prompt = u.prompt
            cur.gold += [(p + len(cur.ids), s) for p, s in u.gold]
            cur.ids += u.ids
            cur.labels += u.labels
        if cur.ids:
            yield cur

    def collate(self, seqs: list[_Unit], shard: int, index: list[int]) -> dict[str, torch.Tensor]:
        """The batch of ``seqs``, sequence i being sequence ``index[i]`` of ``shard`` (its sense draw)."""
        spec, B = self.spec, len(seqs)
        L = max(len(s.ids) for s in seqs) if spec.pad_to == "longest" else spec.seq_len
        ids = np.full((B, L), self.pad, dtype=np.int64)
        labels = np.full((B, L), IGNORE_INDEX, dtype=np.int64)
        att = np.zeros((B, L), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s.ids)], labels[i, : len(s.ids)], att[i, : len(s.ids)] = s.ids, s.labels, 1
        batch = {"input_ids": ids, "attention_mask": att, "labels": labels}
        if spec.prompt_lengths:
            batch[PROMPT_LEN] = np.array([s.prompt for s in seqs], dtype=np.int64)
        if spec.table is not None:
            batch |= sense_sample(
                spec,
                labels,
                [np.random.default_rng([spec.seed, self.epoch, shard, k]) for k in index],
                overrides=[
                    {p: restrict_to_synset(spec.table, int(labels[i, p]), syn) for p, syn in s.gold}
                    for i, s in enumerate(seqs)
                ],
            )
        return {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}

    def count_batches(self, shard: int, num_shards: int) -> int:
        """Batches ``shard`` of ``num_shards`` yields in this epoch (tokenizes, samples nothing)."""
        sequences = sum(1 for _ in self.sequences(self.units(self.documents(shard, num_shards))))
        return -(-sequences // self.spec.batch_size)

    def batches(self, shard: int, num_shards: int) -> Iterator[list[tuple[int, _Unit]]]:
        """The shard's batches as (index in the shard, sequence) pairs (bucketed: see the module doc)."""
        seqs = enumerate(self.sequences(self.units(self.documents(shard, num_shards))))
        B = self.spec.batch_size
        if not self.spec.bucketed:
            while chunk := [s for _, s in zip(range(B), seqs)]:
                yield chunk
            return
        for window in itertools.count():
            pool = [s for _, s in zip(range(BUCKET_BATCHES * B), seqs)]
            if not pool:
                return
            pool.sort(key=lambda s: len(s[1].ids))  # stable: equal lengths keep stream order
            chunks = [pool[i : i + B] for i in range(0, len(pool), B)]
            order = np.random.default_rng([self.spec.seed, self.epoch, shard, 2, window]).permutation(
                len(chunks)
            )
            yield from (chunks[j] for j in order)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        shard, num_shards = self.shard()
        skip = self.skip.get(shard, 0)
        for b, chunk in enumerate(self.batches(shard, num_shards)):
            if b < skip:
                continue
            batch = self.collate([s for _, s in chunk], shard, [k for k, _ in chunk])
            batch.update(
                stream_shard=torch.tensor(shard),
                stream_batch=torch.tensor(b),
                stream_epoch=torch.tensor(self.epoch),
            )
            yield batch


def sense_sample(
    spec: StreamSpec,
    labels: np.ndarray,
    rngs: list[np.random.Generator],
    overrides: list[dict[int, tuple[np.ndarray, np.ndarray]]] | None = None,
) -> dict[str, np.ndarray]:
    """The sense-loss arrays of ``labels`` [B, L] under ``spec`` (``spec.table`` must be set), sequence
    b drawing from ``rngs[b]`` (see :func:`dskd.data.sampling.sample_sense_batch`)."""
    draw = SenseDraw(spec.width, spec.max_positions, spec.fraction, spec.max_neighbours)
    return sample_sense_batch(labels, spec.table, rngs, draw, overrides)


def prompt_tokens(doc: Document, offsets) -> int:
    """Tokens of ``doc`` inside its ``meta["prompt"]`` (a QA prompt opening the text; 0: none)."""
    prompt = doc.meta.get("prompt")
    if not prompt or not doc.text.startswith(prompt):
        return 0
    return sum(1 for _, end in offsets if end <= len(prompt))


def gold_labels(doc: Document, offsets) -> list[tuple[int, str]]:
    """Label positions (inside the unit) whose target token lies in the document's gold span."""
    inside = span_tokens(
        doc.text, np.asarray(offsets, dtype=np.int64).reshape(-1, 2), tuple(doc.meta["span"])
    )
    return [(int(t) - 1, doc.meta["synset"]) for t in np.flatnonzero(inside) if t > 0]


def shuffled(items: Iterator, size: int, rng: np.random.Generator, draws: int = 1024) -> Iterator:
    """Buffer shuffle: hold ``size`` items, emit a random one per new item, then the rest in random order."""
    buf: list = []
    picks: list[int] = []
    for x in items:
        if len(buf) < size:
            buf.append(x)
            continue
        if not picks:
            picks = rng.integers(size, size=draws).tolist()[::-1]
        j = picks.pop()
        yield buf[j]
        buf[j] = x
    for j in rng.permutation(len(buf)):
        yield buf[j]
