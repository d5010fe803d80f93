"""Positions and neighbour candidates of the sense loss (docs/method.md §3.1), as fixed-shape padded arrays.

Per sequence with targets ``labels`` (``IGNORE_INDEX`` where none):
``V`` = positions whose target has lexicon neighbours (synonyms or antonyms), ``n = |V|``,
``m = min(max_positions, n)``, raised to ``floor(fraction * n)`` when that is larger;
``P1`` = m positions drawn from V, ``P2`` = m positions drawn from all positions with a target
(both without replacement); for each P1 position up to ``max_neighbours`` synonym keys and antonym
keys drawn without replacement from the target's neighbours.

Random draws of each sequence, in this order, from its generator (seeded by seed, epoch, sequence index):
``rng.choice(n, m, replace=False)`` (P1 as indices into ascending V),
``rng.choice(len(valid), m, replace=False)`` (P2), ``rng.random(total synonyms of P1)`` and
``rng.random(total antonyms of P1)``: each segment keeps its elements with the smallest draws, in
ascending draw order. Everything is vectorized numpy; shapes are ``[M]`` and ``[M, S]`` with
``M = max_positions_for(seq_len, ...)`` and ``S = max_neighbours`` so that batches have static shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dskd.core.batch import IGNORE_INDEX
from dskd.data.words import WordPositions


@dataclass
class NeighbourTable:
    """Synonym and antonym keys per head token id, CSR (row t: ``indices[indptr[t]:indptr[t+1]]``)."""

    syn_indptr: np.ndarray
    syn_indices: np.ndarray
    ant_indptr: np.ndarray
    ant_indices: np.ndarray
    synset_keys: Callable[[str], tuple[Sequence[int], Sequence[int]]] | None = None
    """synset name -> (lemma keys, antonym keys); needed only for sense-aligned neighbours."""

    @classmethod
    def from_lexicon(cls, lexicon) -> NeighbourTable:
        return cls(
            *(
                np.asarray(getattr(lexicon, k), dtype=np.int64)
                for k in ("syn_indptr", "syn_indices", "ant_indptr", "ant_indices")
            ),
            synset_keys=getattr(lexicon, "synset_keys", None),
        )

    def with_senses_only(self, has_senses: np.ndarray) -> NeighbourTable:
        """The same table keeping only neighbour keys ``k`` with ``has_senses[k]`` (others dropped, so
        the draws of :func:`sample_sense_batch` pick among neighbours the sense loss can use)."""

        def keep(indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            ok = _has(has_senses, indices)
            kept_before = np.concatenate([[0], np.cumsum(ok)]).astype(np.int64)
            return kept_before[indptr], indices[ok]

        synset_keys = self.synset_keys
        if synset_keys is not None:
            inner = synset_keys

            def synset_keys(name: str) -> tuple[Sequence[int], Sequence[int]]:
                lemmas, antonyms = (np.asarray(k, dtype=np.int64) for k in inner(name))
                return lemmas[_has(has_senses, lemmas)], antonyms[_has(has_senses, antonyms)]

        return NeighbourTable(
            *keep(self.syn_indptr, self.syn_indices), *keep(self.ant_indptr, self.ant_indices), synset_keys
        )

    @property
    def num_heads(self) -> int:
        return len(self.syn_indptr) - 1

    def degrees(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Synonym and antonym counts of each token (0 outside the table)."""
        inside = (tokens >= 0) & (tokens < self.num_heads)
        t = np.where(inside, tokens, 0)
        syn = np.where(inside, self.syn_indptr[t + 1] - self.syn_indptr[t], 0)
        ant = np.where(inside, self.ant_indptr[t + 1] - self.ant_indptr[t], 0)
        return syn, ant

    def row(self, kind: str, token: int) -> np.ndarray:
        indptr, indices = (
            (self.syn_indptr, self.syn_indices) if kind == "syn" else (self.ant_indptr, self.ant_indices)
        )
        return indices[indptr[token] : indptr[token + 1]]


def _has(has_senses: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``has_senses[keys]``, False for keys outside the mask."""
    inside = (keys >= 0) & (keys < len(has_senses))
    return inside & has_senses[np.where(inside, keys, 0)]


def num_positions(n: int, max_positions: int = 25, fraction: float = 0.4) -> int:
    """m of docs/method.md §3.1."""
    m = min(max_positions, n)
    return int(np.floor(fraction * n)) if fraction * n > max_positions else m


def max_positions_for(seq_len: int, max_positions: int = 25, fraction: float = 0.4) -> int:
    """M: the largest m a sequence of ``seq_len`` targets can need (the padded width)."""
    return max(max_positions, num_positions(seq_len, max_positions, fraction))


def restrict_to_synset(table: NeighbourTable, token: int, synset: str) -> tuple[np.ndarray, np.ndarray]:
    """The token's synonyms and antonyms that belong to ``synset`` (its lemma or antonym keys)."""
    if table.synset_keys is None:
        raise ValueError("sense-aligned neighbours need a lexicon with a synset table")
    lemma_keys, antonym_keys = table.synset_keys(synset)
    allowed = np.asarray([*lemma_keys, *antonym_keys], dtype=np.int64)
    syn, ant = table.row("syn", token), table.row("ant", token)
    return syn[np.isin(syn, allowed)], ant[np.isin(ant, allowed)]


def _gather(indices: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of the segments ``indices[starts[j] : starts[j] + lens[j]]``."""
    return indices[np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())]


def _draw(values, lens, draws: np.ndarray, rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per segment the ``width`` values with the smallest ``draws``, padded to [rows, width]."""
    seg = np.repeat(np.arange(len(lens)), lens)
    order = np.argsort(seg + draws)  # draws lie in [0, 1): sorts by segment, then by draw
    rank = np.arange(len(values)) - np.repeat(np.cumsum(lens) - lens, lens)
    keep = rank < width
    out = np.zeros((rows, width), dtype=np.int64)
    mask = np.zeros((rows, width), dtype=bool)
    out[seg[keep], rank[keep]] = values[order][keep]
    mask[seg[keep], rank[keep]] = True
    return out, mask


@dataclass(frozen=True)
class SenseDraw:
    """How many sense positions and neighbours :func:`sample_sense_batch` draws (docs/method.md §3.1)."""

    width: int
    """Padded number of position slots per sequence (at least :func:`max_positions_for` the length)."""
    max_positions: int = 25
    fraction: float = 0.4
    """With ``max_positions``: how many positions are drawn (:func:`num_positions`)."""
    max_neighbours: int = 25
    """Neighbours drawn per position and relation."""


def sample_sense_batch(
    labels: np.ndarray,
    table: NeighbourTable,
    rngs: Sequence[np.random.Generator],
    draw: SenseDraw,
    overrides: Sequence[Mapping[int, tuple[np.ndarray, np.ndarray]]] | None = None,
) -> dict[str, np.ndarray]:
    """Sense-loss arrays of a batch ``labels`` [B, L], sequence b drawing from ``rngs[b]``.

    ``overrides[b]`` maps a position of sequence b to its (synonyms, antonyms) in place of the
    target's full rows (sense-aligned neighbours). The keys are ``dskd.batch.SENSE_SAMPLE_KEYS``,
    with the shapes of :class:`dskd.batch.SenseBatch`.
    """
    width, max_neighbours = draw.width, draw.max_neighbours
    labels = np.asarray(labels, dtype=np.int64)
    B = len(labels)
    overrides = overrides or [{}] * B
    syn_deg, ant_deg = table.degrees(labels)
    for b, over in enumerate(overrides):
        for p, (syn, ant) in over.items():
            syn_deg[b, p], ant_deg[b, p] = len(syn), len(ant)
    valid = labels != IGNORE_INDEX
    has = valid & (syn_deg + ant_deg > 0)
    out = {name: np.zeros((B, width), dtype=np.int64) for name in ("sense_pos", "rand_pos")}
    counts = np.zeros(B, dtype=np.int64)
    for b in range(B):  # a few small draws per sequence; everything else is batched below
        V, everywhere = np.flatnonzero(has[b]), np.flatnonzero(valid[b])
        m = num_positions(len(V), draw.max_positions, draw.fraction)
        if m > width:
            raise ValueError(f"{m} sense positions do not fit the padded width {width}")
        if m:
            out["sense_pos"][b, :m] = V[rngs[b].choice(len(V), size=m, replace=False)]
            out["rand_pos"][b, :m] = everywhere[rngs[b].choice(len(everywhere), size=m, replace=False)]
        counts[b] = m
    slots = np.arange(width) < counts[:, None]
    out |= {"sense_pos_mask": slots, "rand_pos_mask": slots.copy(), "n_neighbour_positions": has.sum(1)}
    rows_b, rows_j = np.nonzero(slots)  # P1 slots in (sequence, slot) order
    p1 = out["sense_pos"][rows_b, rows_j]
    targets = labels[rows_b, p1]
    overridden = [
        (k, over[p])
        for k, (b, p) in enumerate(zip(rows_b.tolist(), p1.tolist()))
        if (over := overrides[b]) and p in over
    ]
    for j, kind in enumerate(("syn", "ant")):
        indptr, indices = (
            (table.syn_indptr, table.syn_indices) if j == 0 else (table.ant_indptr, table.ant_indices)
        )
        t = np.clip(targets, 0, table.num_heads - 1)
        starts = indptr[t]
        lens = np.where(targets < table.num_heads, indptr[t + 1] - starts, 0)
        if overridden:  # restricted rows are appended to the CSR values as extra segments
            extra = [np.asarray(rows[j], dtype=np.int64) for _, rows in overridden]
            at = np.array([k for k, _ in overridden])
            sizes = np.array([len(e) for e in extra], dtype=np.int64)
            starts[at] = len(indices) + np.cumsum(sizes) - sizes
            lens[at] = sizes
            indices = np.concatenate([indices, *extra])
        values = _gather(indices, starts, lens)
        per_seq = np.bincount(rows_b, weights=lens, minlength=B).astype(np.int64)
        draws = np.concatenate([rngs[b].random(per_seq[b]) for b in range(B)]) if B else np.zeros(0)
        keys, mask = _draw(values, lens, draws, len(p1), max_neighbours)
        out[f"{kind}_keys"] = np.zeros((B, width, max_neighbours), dtype=np.int64)
        out[f"{kind}_mask"] = np.zeros((B, width, max_neighbours), dtype=bool)
        out[f"{kind}_keys"][rows_b, rows_j], out[f"{kind}_mask"][rows_b, rows_j] = keys, mask
    return out


def sample_word_senses(
    words: Sequence[WordPositions],
    length: int,
    table: NeighbourTable,
    rngs: Sequence[np.random.Generator],
    draw: SenseDraw,
) -> dict[str, np.ndarray]:
    """Sense-loss arrays of a cross-tokenizer batch of ``length`` student positions, the positions being
    those before each word of ``words[b]`` (``dskd.data.words``): :func:`sample_sense_batch` of the
    word keys placed at the student's positions (so the draws are those of a token-keyed batch whose
    targets are these keys), plus the teacher's positions and the key of each drawn P1 and P2 slot
    (``dskd.core.batch.WordSenseSample``; a word without a key gets ``IGNORE_INDEX``: no senses)."""
    B = len(words)
    keys = np.full((B, length), IGNORE_INDEX, dtype=np.int64)
    teacher_at = np.zeros((B, length), dtype=np.int64)
    for b, w in enumerate(words):
        keys[b, w.student] = np.where(w.key >= 0, w.key, -1)
        teacher_at[b, w.student] = w.teacher
    out = sample_sense_batch(keys, table, rngs, draw)
    for name in ("sense", "rand"):
        pos = out[f"{name}_pos"]
        out[f"teacher_{name}_pos"] = np.take_along_axis(teacher_at, pos, 1)
        target = np.take_along_axis(keys, pos, 1)
        out[f"{name}_targets"] = np.where(target >= 0, target, IGNORE_INDEX)
    return out
