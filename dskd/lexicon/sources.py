"""Sources of word relations: WordNet through NLTK, and importers for the authors' formats.

Every source yields a :class:`SourceData`: word pairs with a relation, and the words it knows (with
their WordNet parts of speech where known). Words are normalised the same way everywhere: surrounding
space stripped, underscores (WordNet's multi-word lemmas) become single spaces; case is kept.
Synonym and antonym pairs are unordered; hypernym pairs go from the hyponym to the hypernym.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dskd.core.errors import DSKDError
from dskd.core.io import sha256_file
from dskd.core.progress import progress_bar
from dskd.lexicon.config import LexiconConfig, LexiconSourceConfig

SYN, ANT, HYP = "synonym", "antonym", "hypernym"
RELATION_NAMES = {
    "synonym": SYN,
    "syn": SYN,
    "+1": SYN,
    "1": SYN,
    "antonym": ANT,
    "ant": ANT,
    "-1": ANT,
    "hypernym": HYP,
    "hyp": HYP,
}


@dataclass
class SourceData:
    """What one source contributes."""

    name: str
    pairs: list[tuple[str, str, str]] = field(default_factory=list)
    """(word, word, relation) with relation in SYN, ANT, HYP."""
    words: dict[str, set[str]] = field(default_factory=dict)
    """Every word the source knows -> its parts of speech (empty when unknown)."""
    synsets: dict[str, tuple[list[str], list[str]]] | None = None
    """WordNet only: synset name -> (its lemma words, its antonym words)."""
    path: str | None = None
    sha256: str | None = None
    """sha256 of the import file (WordNet: of the sha256s of its data files and index.sense)."""


def normalize_word(word: str) -> str:
    return " ".join(word.replace("_", " ").split())


def _add(data: SourceData, a: str, b: str, relation: str) -> None:
    a, b = normalize_word(a), normalize_word(b)
    if not a or not b:
        return
    data.words.setdefault(a, set())
    data.words.setdefault(b, set())
    if a != b:
        data.pairs.append((a, b, relation))


def from_wordnet(
    reader: Any, cfg: LexiconConfig, name: str = "wordnet", synsets: Iterable[Any] | None = None
) -> SourceData:
    """Synonyms (lemmas sharing a synset), antonyms (lemma antonym pointers; with
    ``antonyms_extend_to_synsets`` every lemma of the synset x every lemma of the antonym's synset)
    and, with ``hypernyms``, hyponym-lemma -> hypernym-lemma pairs. ``synsets`` restricts the walk to
    some synsets (default: all of ``reader``)."""
    data = SourceData(name, synsets={})
    try:
        synsets = list(reader.all_synsets() if synsets is None else synsets)
    except (LookupError, OSError) as e:
        raise _wordnet_missing(e) from e
    for s in progress_bar(synsets, desc="wordnet", unit="synset", mininterval=2.0, leave=False):
        lemmas = s.lemmas()
        names = [normalize_word(lm.name()) for lm in lemmas]
        pos = s.pos()
        for n in names:
            data.words.setdefault(n, set()).add(pos)
        data.pairs.extend(
            (names[i], names[j], SYN) for i in range(len(names)) for j in range(i + 1, len(names))
        )
        antonyms: list[str] = []
        for lm, n in zip(lemmas, names):
            for ant in lm.antonyms():
                if cfg.antonyms_extend_to_synsets:
                    others = [normalize_word(x.name()) for x in ant.synset().lemmas()]
                    data.pairs.extend((x, y, ANT) for x in names for y in others if x != y)
                else:
                    others = [normalize_word(ant.name())]
                    data.pairs.extend((n, y, ANT) for y in others if n != y)
                antonyms.extend(o for o in others if o not in antonyms)
        data.synsets[s.name()] = (names, antonyms)
        if cfg.hypernyms:
            for h in s.hypernyms() + s.instance_hypernyms():
                others = [normalize_word(x.name()) for x in h.lemmas()]
                data.pairs.extend((x, y, HYP) for x in names for y in others if x != y)
    root = getattr(getattr(reader, "root", None), "path", None)
    if root:
        data.path, data.sha256 = root, _files_sha256(Path(root), WORDNET_DATA_FILES)
    if not synsets:
        raise DSKDError(
            "WordNet has no synsets: its data is empty. Fetch it again: `dskd assets fetch wordnet`."
        )
    return data


WORDNET_DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv", "index.sense")


def _files_sha256(root: Path, names: Iterable[str]) -> str:
    """One sha256 over the sha256 of each named file that exists under ``root``."""
    h = hashlib.sha256()
    for name in names:
        if (root / name).is_file():
            h.update(f"{name} {sha256_file(root / name)}\n".encode())
    return h.hexdigest()


def _wordnet_missing(error: Exception) -> DSKDError:
    return DSKDError(
        f"WordNet data is missing or unreadable ({error}). Fetch it: `dskd assets fetch wordnet` "
        "(add --force to rebuild a corrupt copy)."
    )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines of a UTF-8 text file; unreadable files and bytes raise DSKDError with file:line."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (bytes: a decoding error must name its own line)
    except OSError as e:
        raise DSKDError(
            f"Cannot read lexicon source file '{path}': {e.strerror}. Check `lexicon.sources`."
        ) from e
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DSKDError(f"{path}:{lineno}: not UTF-8 text ({e.reason}).") from e
            yield lineno, line.rstrip("\n").rstrip("\r")


def _malformed(path: Path, lineno: int, what: str) -> DSKDError:
    return DSKDError(f"{path}:{lineno}: malformed line: {what}. Fix or remove the line.")


def _relation(value: str, path: Path, lineno: int) -> str:
    rel = RELATION_NAMES.get(value.strip().lower())
    if rel is None:
        raise _malformed(path, lineno, f"unknown relation '{value}' (use synonym, antonym or hypernym)")
    return rel


def from_wiktionary(path: Path, name: str) -> SourceData:
    """wiktextract JSONL: one entry per line with ``word``, top-level ``synonyms``/``antonyms`` and
    ``senses[*].synonyms``/``antonyms``, each a list of ``{"word": ...}``."""
    data = SourceData(name)
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise _malformed(path, lineno, f"invalid JSON ({e.msg})") from e
        if not isinstance(entry, dict) or not isinstance(entry.get("word"), str):
            raise _malformed(path, lineno, 'expected a JSON object with a string "word"')
        head = entry["word"]
        if normalize_word(head):
            data.words.setdefault(normalize_word(head), set())  # known even without relations
        senses = entry.get("senses") or []
        if not isinstance(senses, list):
            raise _malformed(path, lineno, '"senses" must be a list')
        for holder in [entry, *senses]:
            if not isinstance(holder, dict):
                raise _malformed(path, lineno, "each sense must be a JSON object")
            for key, rel in (("synonyms", SYN), ("antonyms", ANT)):
                items = holder.get(key) or []
                if not isinstance(items, list):
                    raise _malformed(path, lineno, f'"{key}" must be a list')
                for item in items:
                    if not isinstance(item, dict) or not isinstance(item.get("word"), str):
                        raise _malformed(
                            path, lineno, f'each of "{key}" must be an object with a string "word"'
                        )
                    _add(data, head, item["word"], rel)
    return data


def from_dict2vec(path: Path, name: str, relation: str) -> SourceData:
    """Dict2Vec-style pair file: two words per line (whitespace separated); ``#`` comments allowed."""
    data = SourceData(name)
    rel = RELATION_NAMES.get(relation.lower())
    if rel is None:
        raise DSKDError(f"lexicon source '{name}': unknown relation '{relation}' (use synonym or antonym).")
    for lineno, line in _lines(path):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise _malformed(path, lineno, f"expected two words, found {len(parts)} fields")
        _add(data, parts[0], parts[1], rel)
    return data


POS_LETTERS = ("n", "v", "a", "s", "r")
"""WordNet parts of speech: noun, verb, adjective, adjective satellite, adverb."""


def from_tsv(path: Path, name: str) -> SourceData:
    """Tab-separated ``head<TAB>tail<TAB>relation[<TAB>pos]`` (format: lexicon/README.md); ``#`` comments
    allowed. ``pos``, a WordNet letter (n v a s r), is a part of speech of both words (the polarity rule
    checks it); without it they have none of their own."""
    data = SourceData(name)
    for lineno, line in _lines(path):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) not in (3, 4):
            spaces = len(parts) == 1 and " " in line
            hint = " (the fields are separated by tabs, not spaces)" if spaces else ""
            raise _malformed(
                path,
                lineno,
                "expected 3 tab-separated fields (head, tail, relation) and an optional 4th (part of "
                f"speech), found {len(parts)}{hint}",
            )
        head, tail = normalize_word(parts[0]), normalize_word(parts[1])
        if not head or not tail:
            raise _malformed(path, lineno, f"empty {'head' if not head else 'tail'} word")
        rel = _relation(parts[2], path, lineno)
        _add(data, head, tail, rel)
        if len(parts) == 4:
            pos = parts[3].strip().lower()
            if pos not in POS_LETTERS:
                raise _malformed(
                    path, lineno, f"unknown part of speech '{parts[3]}' (use one of {' '.join(POS_LETTERS)})"
                )
            data.words[head].add(pos)
            data.words[tail].add(pos)
    return data


IMPORTERS: dict[str, Callable[[Path, LexiconSourceConfig, str], SourceData]] = {
    "wiktionary": lambda p, s, n: from_wiktionary(p, n),
    "dict2vec": lambda p, s, n: from_dict2vec(p, n, s.relation),
    "tsv": lambda p, s, n: from_tsv(p, n),
}


def load_source(src: LexiconSourceConfig, cfg: LexiconConfig, wordnet: Callable[[], Any]) -> SourceData:
    """Read one configured source; ``wordnet`` is called only for the WordNet source."""
    if src.kind == "wordnet":
        try:
            reader = wordnet()
        except (LookupError, OSError) as e:
            raise _wordnet_missing(e) from e
        return from_wordnet(reader, cfg, src.name or "wordnet")
    if not src.path:
        raise DSKDError(f"Lexicon source of kind '{src.kind}' needs a `path` to its file.")
    path = Path(src.path)
    if not path.is_file():
        raise DSKDError(
            f"Lexicon source file '{path}' (kind {src.kind}) does not exist. Check `lexicon.sources`."
        )
    data = IMPORTERS[src.kind](path, src, src.name or f"{src.kind}:{path.name}")
    data.path, data.sha256 = str(path), sha256_file(path)
    return data
