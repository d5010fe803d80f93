"""Documents from the configured sources: local text / JSONL files, offline asset corpora, QA prompts, hub.

``iter_documents(sources)`` yields :class:`Document` objects in a deterministic order (sources in
config order, files in sorted order, records in file order). Plain text is split into paragraphs
(blank lines end a document and are skipped); lines longer than :data:`MAX_LINE_CHARS` are split at
whitespace; bytes that are not UTF-8 are replaced (counted in :class:`SourceStats`, warned once per
file). QA sources yield chat prompts whose ``meta`` holds ``prompt`` (up to the assistant turn) and
``answer``; WordNet example sentences carry ``synset``, ``lemma`` and the char ``span`` of the lemma.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from dskd.assets import asset_path
from dskd.core.errors import DSKDError
from dskd.corpora.config import SourceConfig
from dskd.corpora.prompts import EXEMPLAR_POOL, PARSERS, QAItem, draw_exemplars, prompt_and_answer, shots_for

log = logging.getLogger(__name__)

MAX_LINE_CHARS = 20_000
"""Longer lines (and paragraphs) are split at whitespace into pieces of at most this many characters."""

HUB_QA = {
    # kind: (dataset id, config name, split)
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "train"),
    "commonsense_qa": ("tau/commonsense_qa", None, "train"),
    "piqa": ("ybisk/piqa", None, "train"),
    "mmlu": ("cais/mmlu", "all", "auxiliary_train"),
    "squad_v2": ("rajpurkar/squad_v2", None, "train"),
}


def hub_datasets(sources: Iterable[SourceConfig]) -> list[str]:
    """The Hugging Face hub data sets ``sources`` read (``hf``: its path; a QA kind: its path or default
    id), each once, in order: a model card's ``datasets``."""
    ids = [
        s.path if s.kind == "hf" else s.path or HUB_QA[s.kind][0]
        for s in sources
        if s.kind in ("hf", *HUB_QA)
    ]
    return list(dict.fromkeys(i for i in ids if i))


@dataclass
class Document:
    text: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceStats:
    """Counts of repaired input, filled while iterating."""

    bad_utf8_lines: int = 0
    empty_lines: int = 0
    split_lines: int = 0
    bytes_read: int = 0
    """Bytes of local files read (text, JSONL, the offline corpora)."""


def iter_documents(
    sources: Iterable[SourceConfig], tokenizer=None, seed: int = 0, stats: SourceStats | None = None
) -> Iterator[Document]:
    """All documents of ``sources`` in order. ``tokenizer`` renders QA prompts with its chat template."""
    stats = stats if stats is not None else SourceStats()
    for src in sources:
        docs = _READERS[src.kind](src, tokenizer, seed, stats)
        if src.max_records is None:
            yield from docs
        elif src.subset_seed is None:
            yield from islice(docs, src.max_records)
        else:
            yield from random_subset(docs, src.max_records, src.subset_seed)


def random_subset(items: Iterable, n: int, seed: int, draws: int = 4096) -> Iterator:
    """``n`` items drawn uniformly without replacement from ``items`` (all of them when there are fewer),
    in their original order; the choice depends only on ``seed`` and the number of items.

    Reservoir sampling (Algorithm R): item i >= n replaces slot ``floor(u * (i + 1))`` when that is
    below ``n``, u uniform from the generator seeded by ``seed``; it reads every item once and holds n.
    """
    rng = np.random.default_rng(seed)
    kept: list[tuple[int, Any]] = []
    u = np.empty(0)
    for i, item in enumerate(items):
        if i < n:
            kept.append((i, item))
            continue
        if (i - n) % draws == 0:
            u = rng.random(draws)
        j = int(u[(i - n) % draws] * (i + 1))
        if j < n:
            kept[j] = (i, item)
    for _, item in sorted(kept, key=lambda pair: pair[0]):
        yield item


def is_validation(text: str, fraction: float) -> bool:
    """Deterministic held-out choice by a hash of the text (same answer in every process and run)."""
    return fraction > 0 and text_hash(text) / 2**64 < fraction


def text_hash(text: str) -> int:
    """The 64-bit hash of a document's text that :func:`is_validation` compares with the fraction."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def source_name(src: SourceConfig) -> str:
    return f"{src.kind}:{src.path}" if src.path else src.kind


# ---------------------------------------------------------------- files


def expand_files(pattern: str) -> list[Path]:
    """Sorted files matching a glob (or one path); DSKDError naming the pattern when nothing matches."""
    pattern = os.path.expanduser(pattern)
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not files and Path(pattern).is_dir():
        raise DSKDError(
            f"Data source path '{pattern}' is a folder; give a file or a glob of its files, e.g. "
            f"'{pattern.rstrip('/')}/*.txt'."
        )
    if not files:
        raise DSKDError(
            f"Data source file(s) '{pattern}' not found. Check the path or glob in data.train/val."
        )
    return files


def split_long(text: str, limit: int = MAX_LINE_CHARS) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at the last space before the limit when there is one."""
    pieces = []
    while len(text) > limit:
        cut = text.rfind(" ", limit // 2, limit)
        cut = limit if cut <= 0 else cut
        pieces.append(text[:cut])
        text = text[cut:].lstrip()
    if text:
        pieces.append(text)
    return pieces


def file_lines(
    path: Path, stats: SourceStats, span: tuple[int, int] | None = None, lineno: int = 1, handle=None
) -> Iterator[tuple[int, int, int, str]]:
    """(line number, byte start, byte end, line without its line end) of the lines of ``path``, or of
    its bytes ``span`` (whose first line is number ``lineno``); invalid UTF-8 replaced (counted; one
    warning per whole file, none for a span: its reader warns once per file). ``handle``: ``path``
    already open (binary), left open."""
    bad, offset = 0, span[0] if span else 0
    with open(path, "rb") if handle is None else contextlib.nullcontext(handle) as f:
        f.seek(offset)
        raws = io.BytesIO(f.read(span[1] - span[0])) if span else f
        for number, raw in enumerate(raws, lineno):
            stats.bytes_read += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", errors="replace")
                bad += 1
                stats.bad_utf8_lines += 1
                if bad == 1 and not span:
                    log.warning("%s:%d: bytes that are not UTF-8 replaced by U+FFFD", path, number)
            yield number, offset, offset + len(raw), line.rstrip("\r\n")
            offset += len(raw)
    if bad > 1 and not span:
        log.warning("%s: %d lines had bytes that are not UTF-8 (replaced)", path, bad)


def read_lines(path: Path, stats: SourceStats) -> Iterator[str]:
    """Lines without line ends; invalid UTF-8 replaced (counted, one warning per file)."""
    return (line for _, _, _, line in file_lines(path, stats))


@dataclass
class Block:
    """Lines of a file that its reader parses alone: a paragraph (text) or one line (JSONL). The
    documents of a block read from its byte range ``[start, end)`` are those of a whole-file read."""

    start: int
    end: int
    lineno: int
    lines: list[str] = field(default_factory=list)


def file_blocks(
    path: Path, stats: SourceStats, paragraphs: bool, span: tuple[int, int, int] | None = None, handle=None
) -> Iterator[Block]:
    """The blocks of ``path`` (or of its bytes ``span`` = (start, end, first line number)): runs of
    lines that are not blank when ``paragraphs``, else single lines; blank lines are counted and skipped.
    ``handle``: as for :func:`file_lines`."""
    block = None
    lines = file_lines(path, stats, span[:2], span[2], handle) if span else file_lines(path, stats)
    for lineno, start, end, line in lines:
        if not line.strip():
            stats.empty_lines += 1
        elif block is not None and paragraphs:
            block.lines.append(line)
            block.end = end
            continue
        if block is not None:
            yield block
        block = Block(start, end, lineno, [line]) if line.strip() else None
    if block is not None:
        yield block


def paragraph_documents(block: Block, path: Path, stats: SourceStats, name: str) -> Iterator[Document]:
    """The documents of a paragraph: its lines, cut into documents of at most MAX_LINE_CHARS characters."""
    para: list[str] = []
    size = 0
    for line in block.lines:
        pieces = split_long(line) if len(line) > MAX_LINE_CHARS else [line]
        stats.split_lines += len(pieces) > 1
        for piece in pieces:
            if size + len(piece) > MAX_LINE_CHARS and para:
                yield Document("\n".join(para), name, {"file": str(path)})
                para, size = [], 0
            para.append(piece)
            size += len(piece) + 1
    if para:
        yield Document("\n".join(para), name, {"file": str(path)})


def parse_record(line: str, path: Path, lineno: int) -> dict[str, Any]:
    """The JSON object of a JSONL line; DSKDError naming file:line when it is not one."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DSKDError(f"{path}:{lineno} is not valid JSON ({e.msg}). Fix or remove that line.") from e
    if not isinstance(rec, dict):
        raise DSKDError(f"{path}:{lineno} is not a JSON object; each line must be one record.")
    return rec


def read_jsonl(path: Path, stats: SourceStats) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of a JSONL file; empty lines skipped; DSKDError naming file:line on bad JSON."""
    for block in file_blocks(path, stats, paragraphs=False):
        yield block.lineno, parse_record(block.lines[0], path, block.lineno)


def _field(rec: dict[str, Any], key: str, path: Path, lineno: int) -> str:
    if key not in rec or not isinstance(rec[key], str):
        raise DSKDError(
            f"{path}:{lineno}: record has no text field '{key}' (fields: {', '.join(sorted(rec))}). "
            "Set `field` of this data source to the key holding the text."
        )
    return rec[key]


def jsonl_documents(block: Block, path: Path, stats: SourceStats, key: str, name: str) -> Iterator[Document]:
    """The documents of a JSONL line: its field ``key``, cut into pieces of at most MAX_LINE_CHARS."""
    text = _field(parse_record(block.lines[0], path, block.lineno), key, path, block.lineno)
    for piece in split_long(text) if text.strip() else []:
        yield Document(piece, name, {"file": str(path), "line": block.lineno})


def wordnet_documents(block: Block, path: Path, stats: SourceStats, part: str) -> Iterator[Document]:
    """The gloss (meta: synset) or example sentence (meta: synset, lemma, span) of a WordNet corpus line."""
    rec = parse_record(block.lines[0], path, block.lineno)
    meta: dict[str, Any] = {"synset": rec.get("synset")}
    if part == "examples" and rec.get("start") is not None:
        meta.update(lemma=rec.get("lemma"), span=(int(rec["start"]), int(rec["end"])))
    yield Document(_field(rec, "text", path, block.lineno), f"wordnet_corpus:{part}", meta)


# ---------------------------------------------------------------- files a reader can split


@dataclass(frozen=True)
class SplitFile:
    """A file read block by block (see :class:`Block`): a rank can read only the blocks it needs."""

    path: Path
    paragraphs: bool
    """Blocks are paragraphs (text), else lines (JSONL)."""
    parse: Callable[[Block, Path, SourceStats], Iterator[Document]]
    """The documents of one block of ``path``."""
    reading: str
    """What ``parse`` depends on besides the bytes (kind and field): part of the file's index key."""

    def documents(self, stats: SourceStats) -> Iterator[Document]:
        for block in file_blocks(self.path, stats, self.paragraphs):
            yield from self.parse(block, self.path, stats)


def split_files(src: SourceConfig) -> list[SplitFile] | None:
    """The files of ``src`` in reading order, or None for a source that cannot be split: ``bigbench``
    (one JSON document) and the hub sources (``hf`` and the QA kinds, streamed by ``datasets``)."""
    if src.kind == "shakespeare":
        return [SplitFile(asset_path("shakespeare") / "shakespeare.txt", True, _SHAKESPEARE, "text")]
    if src.kind in ("text", "jsonl") and not src.path:
        raise DSKDError(f"A data source of kind '{src.kind}' needs `path` (a file or glob).")
    if src.kind == "text":
        parse = partial(paragraph_documents, name=source_name(src))
        return [SplitFile(p, True, parse, "text") for p in expand_files(src.path)]
    if src.kind == "jsonl":
        parse = partial(jsonl_documents, key=src.field, name=source_name(src))
        return [SplitFile(p, False, parse, f"jsonl:{src.field}") for p in expand_files(src.path)]
    if src.kind == "wordnet_corpus":
        files = wordnet_corpus_files(asset_path("wordnet-corpus"), src.path)
        return [
            SplitFile(p, False, partial(wordnet_documents, part=part), f"wordnet_corpus:{part}")
            for part, p in files
        ]
    return None


_SHAKESPEARE = partial(paragraph_documents, name="shakespeare")


def wordnet_corpus_files(root: Path, part: str | None) -> list[tuple[str, Path]]:
    """(part, file) of the WordNet corpus: glosses, examples or both; DSKDError when one is missing."""
    parts = [part] if part else ["glosses", "examples"]
    for p in parts:
        if p not in ("glosses", "examples"):
            raise DSKDError(f"wordnet_corpus `path` must be glosses, examples or empty, not '{p}'.")
        path = root / f"{p}.jsonl"
        if not path.is_file():
            raise DSKDError(f"WordNet corpus file {path} is missing. Run `dskd assets fetch wordnet-corpus`.")
    return [(p, root / f"{p}.jsonl") for p in parts]


# ---------------------------------------------------------------- QA


def qa_documents(kind: str, records: Iterable[dict[str, Any]], name: str, shots: int, tokenizer, seed: int):
    """Chat prompt documents of QA records; exemplars from the first EXEMPLAR_POOL records, seeded."""
    parse = PARSERS[kind]
    records = iter(records)
    pool: list[QAItem] = [parse(r) for r in islice(records, max(EXEMPLAR_POOL, shots + 1))]

    def items() -> Iterator[QAItem]:
        yield from pool
        for r in records:
            yield parse(r)

    for i, item in enumerate(items()):
        prompt, full = prompt_and_answer(item, draw_exemplars(pool, i, shots, seed), tokenizer)
        yield Document(full, name, {"prompt": prompt, "answer": item.answer, "qa": kind})


def _bigbench(src: SourceConfig, tokenizer, seed: int, stats: SourceStats) -> Iterator[Document]:
    if not src.path:
        raise DSKDError("A bigbench data source needs `path`: the task name (e.g. social_iqa).")
    task = (
        Path(src.path)
        if Path(src.path).suffix == ".json"
        else asset_path("bigbench-mc") / src.path / "task.json"
    )
    if not task.is_file():
        raise DSKDError(
            f"BIG-bench task file {task} not found. Check the task name or fetch the bigbench-mc asset."
        )
    examples = [
        e for e in json.loads(task.read_text(encoding="utf-8")).get("examples", []) if "target_scores" in e
    ]
    if not examples:
        raise DSKDError(f"{task} has no multiple-choice examples (target_scores).")
    yield from qa_documents(
        "bigbench", examples, source_name(src), shots_for("bigbench", src.shots), tokenizer, seed
    )


HUB_MIRROR = "DSKD_HUB_MIRROR"
"""Environment variable naming a folder of hub data sets as JSONL files (see :func:`mirror_file`)."""


def mirror_file(dataset: str, subset: str | None, split: str) -> Path | None:
    """``$DSKD_HUB_MIRROR/<dataset id>/<subset or default>/<split>.jsonl`` when the variable is set and
    the file exists: a local copy read instead of the hub (offline clusters, `reproduce --rehearse`)."""
    root = os.environ.get(HUB_MIRROR)
    if not root:
        return None
    path = Path(root) / dataset / (subset or "default") / f"{split}.jsonl"
    return path if path.is_file() else None


def hub_records(dataset: str, subset: str | None, split: str) -> Iterator[dict[str, Any]]:
    """Records of a Hugging Face dataset: from the mirror folder when it has them (:func:`mirror_file`),
    else streamed from the hub (clear errors when offline or not installed)."""
    mirrored = mirror_file(dataset, subset, split)
    if mirrored is not None:
        yield from (rec for _, rec in read_jsonl(mirrored, SourceStats()))
        return
    try:
        # deferred: datasets is optional (it comes with the eval extra); local and offline sources need none
        import datasets
    except ImportError as e:
        raise DSKDError(
            f"Reading '{dataset}' from the hub needs the `datasets` package: pip install datasets. "
            "Offline, use local text/jsonl files or the offline sources (wordnet_corpus, shakespeare, "
            "bigbench)."
        ) from e
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise DSKDError(
            f"Cannot stream '{dataset}': the hub is switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE=1). "
            "Unset it where the hub is reachable, give a local copy (DSKD_HUB_MIRROR, docs/data.md), or use "
            "local or offline sources."
        )
    try:
        yield from datasets.load_dataset(dataset, subset, split=split, streaming=True)
    except (ConnectionError, OSError) as e:
        raise DSKDError(
            f"Cannot stream '{dataset}' from the hub ({e}). Check the network or use offline sources."
        ) from e


def _hf(src: SourceConfig, tokenizer, seed: int, stats: SourceStats) -> Iterator[Document]:
    if not src.path:
        raise DSKDError("A data source of kind 'hf' needs `path`: the dataset id.")
    for i, rec in enumerate(hub_records(src.path, src.subset, src.split or "train")):
        text = rec.get(src.field)
        if not isinstance(text, str):
            raise DSKDError(
                f"{src.path} record {i} has no text field '{src.field}'. Set `field` of this source."
            )
        for piece in split_long(text) if text.strip() else []:
            yield Document(piece, source_name(src), {})


def _hub_qa(src: SourceConfig, tokenizer, seed: int, stats: SourceStats) -> Iterator[Document]:
    dataset, subset, split = HUB_QA[src.kind]
    records = hub_records(src.path or dataset, src.subset or subset, src.split or split)
    yield from qa_documents(src.kind, records, src.kind, shots_for(src.kind, src.shots), tokenizer, seed)


def _files(src: SourceConfig, tokenizer, seed: int, stats: SourceStats) -> Iterator[Document]:
    for f in split_files(src):
        yield from f.documents(stats)


_READERS = {
    **{k: _files for k in ("text", "jsonl", "wordnet_corpus", "shakespeare")},
    "bigbench": _bigbench,
    "hf": _hf,
    **{k: _hub_qa for k in HUB_QA},
}
