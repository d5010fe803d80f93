"""Map the word-level relation table onto one tokenizer: heads, neighbour keys, virtual ids (VIDs).

- Every word is tokenized as ``" " + word`` (batched calls of the fast tokenizer); a word with an
  unknown-token piece is neither a head nor a neighbour.
- Head: a word of at least ``min_head_chars`` characters that is exactly one token.
- Neighbour key: 1 token -> that token id (unless ``single_token_neighbours`` is off); 2 to
  ``max_neighbour_tokens`` tokens -> a VID. VIDs count up from the vocabulary size in the sorted order
  of their token tuples, so the same inputs always give the same VIDs.
- Case variants (``case_variants``): a lowercase head's capitalised form (" Good") becomes a head with
  the same neighbour keys when it is one token and no source lists it as a word itself.
- The synset table (synset -> keys of its lemmas and of its antonyms) uses the same keys and makes no
  VID of its own: a multi-token lemma appears there only when it is a neighbour of some head.
- Edges with the same (head, key) from different words merge their source masks; a (head, key) that
  ends up with both signs is dropped; a key equal to its head is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dskd.lexicon.config import LexiconConfig
from dskd.lexicon.relations import WordRelations


def vocab_size(tokenizer: Any) -> int:
    """Number of token ids of ``tokenizer`` (added tokens included); VIDs start here."""
    return len(tokenizer)


def tokenize_words(tokenizer: Any, words: Sequence[str], batch_size: int = 8192) -> list[list[int]]:
    """Token ids of ``" " + word`` for every word (no special tokens), in batches of the Rust tokenizer
    (``encode_batch`` directly: the Python wrapper's per-item conversion costs more than the encoding)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    out: list[list[int]] = []
    for i in range(0, len(words), batch_size):
        batch = [" " + w for w in words[i : i + batch_size]]
        if backend is not None:
            out.extend(e.ids for e in backend.encode_batch(batch, add_special_tokens=False))
        else:
            out.extend(tokenizer(batch, add_special_tokens=False)["input_ids"])
    return out


@dataclass
class Csr:
    """Rows over token ids: ``indices[indptr[t]:indptr[t+1]]`` are the keys of head ``t``."""

    indptr: np.ndarray
    indices: np.ndarray
    sources: np.ndarray
    """Source bitmask of each entry (parallel to ``indices``)."""

    @classmethod
    def from_edges(cls, n_rows: int, edges: dict[tuple[int, int], int]) -> Csr:
        if edges:
            arr = np.array([(h, k, m) for (h, k), m in edges.items()], dtype=np.int64)
        else:
            arr = np.zeros((0, 3), dtype=np.int64)
        arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(arr[:, 0], minlength=n_rows), out=indptr[1:])
        return cls(indptr, np.ascontiguousarray(arr[:, 1]), np.ascontiguousarray(arr[:, 2]))

    @property
    def n_heads(self) -> int:
        return int(np.count_nonzero(np.diff(self.indptr)))


@dataclass
class MappedLexicon:
    vocab_size: int
    syn: Csr
    ant: Csr
    hyp: Csr
    vid_tokens: list[tuple[int, ...]]
    """Token tuple of VID ``vocab_size + i``."""
    vid_words: list[str]
    """One word of each VID (for people reading the artifact)."""
    synset_names: list[str]
    synset_lemmas: Csr
    synset_antonyms: Csr


class _Keys:
    """Word -> head id / neighbour key, with VIDs assigned after all uses are known."""

    def __init__(self, tokenizer: Any, words: Sequence[str], cfg: LexiconConfig):
        self.v = vocab_size(tokenizer)
        self.cfg = cfg
        unk = getattr(tokenizer, "unk_token_id", None)
        ids = [() if unk is not None and unk in t else tuple(t) for t in tokenize_words(tokenizer, words)]
        self.ids = dict(zip(words, ids))
        self.used_multi: dict[tuple[int, ...], str] = {}

    def head(self, word: str) -> int | None:
        ids = self.ids[word]
        return ids[0] if len(ids) == 1 and len(word) >= self.cfg.min_head_chars else None

    def key(self, word: str, new_vid: bool = True) -> tuple[int, ...] | None:
        """Token tuple of a usable neighbour (resolved to an id or VID by :meth:`finish`); with
        ``new_vid=False`` a multi-token word is usable only if an earlier call made it a VID."""
        ids = self.ids[word]
        if not ids or len(ids) > self.cfg.max_neighbour_tokens:
            return None
        if len(ids) == 1:
            return ids if self.cfg.single_token_neighbours else None
        if not new_vid:
            return ids if ids in self.used_multi else None
        self.used_multi.setdefault(ids, word)
        return ids

    def finish(self) -> dict[tuple[int, ...], int]:
        order = sorted(self.used_multi)
        return {t: self.v + i for i, t in enumerate(order)}


def _edges(
    pairs: Iterable[tuple[int, tuple[int, ...], int, int]], vids: dict[tuple[int, ...], int]
) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int]]:
    """(head, key tuple, sign, mask) -> synonym edges and antonym edges, conflicts and self keys dropped."""
    by_sign: dict[int, dict[tuple[int, int], int]] = {1: {}, -1: {}}
    for head, kt, sign, mask in pairs:
        key = kt[0] if len(kt) == 1 else vids[kt]
        if key == head:
            continue
        d = by_sign[sign]
        d[(head, key)] = d.get((head, key), 0) | mask
    both = by_sign[1].keys() & by_sign[-1].keys()
    for k in both:
        del by_sign[1][k], by_sign[-1][k]
    return by_sign[1], by_sign[-1]


def map_to_tokenizer(
    rel: WordRelations,
    tokenizer: Any,
    cfg: LexiconConfig,
    synsets: dict[str, tuple[list[str], list[str]]] | None = None,
) -> MappedLexicon:
    """Heads, neighbour keys and VIDs of ``rel`` (and of the WordNet synset table) for ``tokenizer``."""
    words: set[str] = set()
    for a, b in rel.signed:
        words.update((a, b))
    for a, b in rel.hypernyms:
        words.update((a, b))
    for lemmas, ants in (synsets or {}).values():
        words.update(lemmas)
        words.update(ants)
    variants: dict[str, str] = {}
    if cfg.case_variants:
        variants = {w: w[0].upper() + w[1:] for w in words if w[:1].isalpha() and w == w.lower()}
        variants = {w: c for w, c in variants.items() if c not in words}
    keys = _Keys(tokenizer, sorted(words | set(variants.values())), cfg)
    heads: dict[str, list[int]] = {}
    for w in words:
        hs = [h for h in (keys.head(w), keys.head(variants[w]) if w in variants else None) if h is not None]
        if hs:
            heads[w] = hs

    signed: list[tuple[int, tuple[int, ...], int, int]] = []
    for (a, b), (sign, mask) in rel.signed.items():
        for h, t in ((a, b), (b, a)):
            if h in heads and (kt := keys.key(t)) is not None:
                signed.extend((hid, kt, sign, mask) for hid in heads[h])
    hyp: list[tuple[int, tuple[int, ...], int, int]] = []
    for (a, b), mask in rel.hypernyms.items():
        if a in heads and (kt := keys.key(b)) is not None:
            hyp.extend((hid, kt, 1, mask) for hid in heads[a])

    table: list[tuple[str, list[tuple[int, ...]], list[tuple[int, ...]]]] = []
    for name in sorted(synsets or {}):
        lemmas, ants = synsets[name]
        lk = [k for w in lemmas if (k := keys.key(w, new_vid=False)) is not None]
        ak = [k for w in ants if (k := keys.key(w, new_vid=False)) is not None]
        if lk or ak:
            table.append((name, lk, ak))

    vids = keys.finish()
    syn_edges, ant_edges = _edges(signed, vids)
    hyp_edges, _ = _edges(hyp, vids)
    v = keys.v

    def rows(col: int) -> Csr:
        edges: dict[tuple[int, int], int] = {}
        for i, entry in enumerate(table):
            for kt in entry[col]:
                edges[(i, kt[0] if len(kt) == 1 else vids[kt])] = 0
        return Csr.from_edges(len(table), edges)

    vid_order = sorted(vids, key=vids.__getitem__)
    return MappedLexicon(
        vocab_size=v,
        syn=Csr.from_edges(v, syn_edges),
        ant=Csr.from_edges(v, ant_edges),
        hyp=Csr.from_edges(v, hyp_edges),
        vid_tokens=vid_order,
        vid_words=[keys.used_multi[t] for t in vid_order],
        synset_names=[name for name, _, _ in table],
        synset_lemmas=rows(1),
        synset_antonyms=rows(2),
    )
