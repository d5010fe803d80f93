"""One shard of the document stream, reading only the blocks of its documents where a source allows it.

The stream's documents (sources in order, after the validation hold-out) are dealt round-robin:
document j goes to shard ``j % num_shards``. A shard of a file that
:func:`dskd.corpora.sources.split_files` splits (text, jsonl, wordnet_corpus, shakespeare) finds its
documents in the file's *index* and reads only the blocks (paragraphs, JSONL lines) that hold them,
about ``1 / num_shards`` of the bytes. The index (per block its byte span, first line number and
document count; per document the hash that decides the hold-out) is built by one full read and kept
in ``$DSKD_HOME/cache/doc-index/`` (``$DSKD_INDEX_DIR`` when set), keyed by the file's path, size and
modification time and how it is parsed, so it is rebuilt when the file changes. One shard alone
(``num_shards`` 1) reads its files whole, without an index. Sources that cannot be split
(``bigbench``, ``hf`` and the QA kinds; any source with ``subset_seed``, whose reservoir draw reads
the whole source; a file whose index cannot be built because a line is bad) are read whole by every
shard, which keeps its share, as before. Either way a shard gets the same documents in the same order.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dskd.assets import dskd_home
from dskd.core.errors import DSKDError
from dskd.core.io import atomic_path
from dskd.corpora.config import SourceConfig
from dskd.corpora.sources import (
    MAX_LINE_CHARS,
    Document,
    SourceStats,
    SplitFile,
    file_blocks,
    is_validation,
    iter_documents,
    split_files,
    text_hash,
)

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
INDEX_DIR = "DSKD_INDEX_DIR"
"""Environment variable naming the folder of the kept indexes (default ``$DSKD_HOME/cache/doc-index``)."""


@dataclass
class FileIndex:
    """Where the documents of a split file are."""

    spans: np.ndarray
    """[blocks, 3] int64: byte start, byte end and first line number of each block with documents."""
    first: np.ndarray
    """[blocks + 1] int64: number (in the file) of each block's first document, then the total."""
    hashes: np.ndarray
    """[documents] uint64: :func:`dskd.corpora.sources.text_hash` of each document."""


def index_file(f: SplitFile) -> Path:
    """Where the index of ``f`` is kept (its name changes with the file's size and modification time)."""
    st = f.path.stat()
    key = f"{INDEX_FORMAT}|{f.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{f.reading}|{MAX_LINE_CHARS}"
    name = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
    return index_root() / f"{name}.npz"


def index_root() -> Path:
    """The folder of the kept indexes: ``$DSKD_INDEX_DIR``, else ``$DSKD_HOME/cache/doc-index``."""
    return Path(os.environ.get(INDEX_DIR) or dskd_home() / "cache" / "doc-index").expanduser()


def build_index(f: SplitFile, stats: SourceStats) -> FileIndex:
    """The index of ``f`` by one full read."""
    spans, counts, hashes = [], [], []
    for block in file_blocks(f.path, stats, f.paragraphs):
        docs = [text_hash(d.text) for d in f.parse(block, f.path, stats)]
        if docs:
            spans.append((block.start, block.end, block.lineno))
            counts.append(len(docs))
            hashes += docs
    return FileIndex(
        np.array(spans, dtype=np.int64).reshape(-1, 3),
        np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]),
        np.array(hashes, dtype=np.uint64),
    )


def load_index(f: SplitFile, stats: SourceStats) -> FileIndex:
    """The kept index of ``f``, built (and kept) when there is none or it cannot be read. A home that
    cannot be written only costs the next reader a full read again."""
    path = index_file(f)
    try:
        with np.load(path) as z:
            return FileIndex(z["spans"], z["first"], z["hashes"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        log.warning("the document index %s cannot be read (%s); building it again", path, e)
    index = build_index(f, stats)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            np.savez(out, spans=index.spans, first=index.first, hashes=index.hashes)
    except OSError as e:
        log.warning("cannot keep the document index of %s in %s (%s)", f.path, path.parent, e)
    return index


def index_sources(sources: Iterable[SourceConfig], stats: SourceStats | None = None) -> int:
    """Build the missing indexes of the split files of ``sources`` (before a launch, so that ranks find
    them); the number of split files. A file whose index cannot be built is left to its readers."""
    stats = stats if stats is not None else SourceStats()
    files = [f for src in sources if src.subset_seed is None for f in split_files(src) or []]
    for f in files:
        try:
            load_index(f, stats)
        except DSKDError:
            continue
    return len(files)


def kept(hashes: np.ndarray, holdout: tuple[str, float]) -> np.ndarray:
    """Which documents (by hash) the hold-out ``(mode, val_fraction)`` keeps, as :func:`is_validation`
    decides: mode none keeps all, train those not held out, val the held-out ones."""
    mode, fraction = holdout
    if mode == "none":
        return np.ones(len(hashes), dtype=bool)
    val = hashes.astype(np.float64) / 2**64 < fraction if fraction > 0 else np.zeros(len(hashes), bool)
    return val if mode == "val" else ~val


def read_documents(f: SplitFile, index: FileIndex, numbers: np.ndarray, stats: SourceStats):
    """Documents ``numbers`` (ascending) of ``f``, reading only the blocks that hold them."""
    blocks = np.searchsorted(index.first, numbers, side="right") - 1
    bad = stats.bad_utf8_lines
    with open(f.path, "rb") as handle:
        for b, group in itertools.groupby(zip(blocks.tolist(), numbers.tolist()), key=lambda p: p[0]):
            block = next(file_blocks(f.path, stats, f.paragraphs, tuple(index.spans[b].tolist()), handle))
            docs = list(f.parse(block, f.path, stats))
            yield from (docs[n - int(index.first[b])] for _, n in group)
    if stats.bad_utf8_lines > bad:
        log.warning(
            "%s: %d lines this shard read had bytes that are not UTF-8 (replaced)",
            f.path,
            stats.bad_utf8_lines - bad,
        )


def shard_documents(
    sources: list[SourceConfig],
    tokenizer,
    seed: int,
    shard: tuple[int, int],
    holdout: tuple[str, float],
    stats: SourceStats | None = None,
) -> Iterator[Document]:
    """The documents of ``shard = (s, num_shards)``: those whose number j among the documents of
    ``sources`` that ``holdout`` keeps has ``j % num_shards == s``, in order (see the module doc)."""
    stats = stats if stats is not None else SourceStats()
    deal = _Deal(*shard, holdout)
    for src in sources:
        files = split_files(src) if src.subset_seed is None and shard[1] > 1 else None
        if files is None:  # one shard reads every block anyway: the whole read, without an index
            yield from deal.whole(iter_documents([src], tokenizer, seed, stats))
            continue
        left = src.max_records
        for i, f in enumerate(files):
            index = None if left == 0 else _try_index(f, stats)
            if index is None:  # read the rest whole: a bad line raises where it is reached, as before
                rest = itertools.chain.from_iterable(g.documents(stats) for g in files[i:])
                yield from deal.whole(rest if left is None else itertools.islice(rest, left))
                break
            hashes = index.hashes if left is None else index.hashes[:left]
            left = None if left is None else left - len(hashes)
            yield from read_documents(f, index, deal.numbers(hashes), stats)


@dataclass
class _Deal:
    """The round-robin deal of the kept documents: ``j`` counts those dealt so far."""

    shard: int
    num_shards: int
    holdout: tuple[str, float]
    j: int = 0

    def whole(self, docs: Iterable[Document]) -> Iterator[Document]:
        """The shard's documents among ``docs`` (every one read)."""
        mode, fraction = self.holdout
        for doc in docs:
            if mode == "none" or is_validation(doc.text, fraction) == (mode == "val"):
                if self.j % self.num_shards == self.shard:
                    yield doc
                self.j += 1

    def numbers(self, hashes: np.ndarray) -> np.ndarray:
        """The numbers of the shard's documents among those of ``hashes``."""
        numbers = np.flatnonzero(kept(hashes, self.holdout))
        mine = numbers[(self.j + np.arange(len(numbers))) % self.num_shards == self.shard]
        self.j += len(numbers)
        return mine


def _try_index(f: SplitFile, stats: SourceStats) -> FileIndex | None:
    """The index of ``f``, or None when a bad line stops its build."""
    try:
        return load_index(f, stats)
    except DSKDError:
        return None
