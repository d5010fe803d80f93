"""The ``wordnet-corpus`` asset: WordNet glosses and example sentences as JSONL.

Each example is aligned to its own synset: the first occurrence of one of the synset's lemmas in
the sentence, found case-insensitively as (1) the exact lemma (multi-word lemmas with spaces or
hyphens), else (2) a word whose WordNet base form (``morphy``) is the lemma, else (3) a word that
starts with the lemma's stem (the lemma minus a final e/y) with at most 4 extra letters.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from dskd.assets._wordnet import base_forms

WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
MAX_SUFFIX = 4


def _words(text: str) -> list[re.Match]:
    return list(WORD.finditer(text))


def _exact(text: str, lemma: str) -> tuple[int, int] | None:
    parts = [re.escape(p) for p in re.split(r"[_ ]+", lemma) if p]
    pattern = r"(?<![A-Za-z0-9])" + r"[\s-]+".join(parts) + r"(?![A-Za-z0-9])"
    m = re.search(pattern, text, flags=re.IGNORECASE)
    return m.span() if m else None


def _inflected(wn, words: list[re.Match], lemma: str, pos: str) -> tuple[int, int] | None:
    """Multi-word lemmas match with any one word inflected (e.g. 'looked up', 'passers by')."""
    parts = lemma.lower().split("_")
    stem = parts[-1][:-1] if len(parts[-1]) > 3 and parts[-1][-1] in "ey" else parts[-1]
    n = len(parts)
    for i in range(len(words) - n + 1):
        window = [w.group().lower() for w in words[i : i + n]]
        if all(
            _same(wn, w, p, pos, stem if j == n - 1 else None) for j, (w, p) in enumerate(zip(window, parts))
        ):
            return words[i].start(), words[i + n - 1].end()
    return None


def _same(wn, word: str, part: str, pos: str, stem: str | None) -> bool:
    if word == part or part in base_forms(wn, word, pos):
        return True
    if len(part) > 2 and any(part in base_forms(wn, word, p) for p in "nvar"):
        return True
    return (
        stem is not None and len(stem) >= 3 and word.startswith(stem) and len(word) - len(stem) <= MAX_SUFFIX
    )


def find_lemma(wn, text: str, lemmas: list[str], pos: str) -> tuple[str, int, int] | None:
    """(lemma, start, end) of the first lemma of ``lemmas`` found in ``text``, or None."""
    pos = "a" if pos == "s" else pos
    ordered = sorted(lemmas, key=lambda name: -len(name))  # longest first: 'river_bank' before 'bank'
    for lemma in ordered:
        span = _exact(text, lemma)
        if span:
            return lemma, *span
    words = _words(text)
    for lemma in ordered:
        span = _inflected(wn, words, lemma, pos)
        if span:
            return lemma, *span
    return None


def build_wordnet_corpus(wn, out: Path) -> dict[str, Any]:
    """Write ``glosses.jsonl`` and ``examples.jsonl`` to ``out``; returns the record counts."""
    # deferred: `make check-sources` imports dskd.assets on the bare system Python (no tqdm)
    from dskd.core.progress import progress_bar

    n_gloss = n_ex = n_found = 0
    with open(out / "glosses.jsonl", "w", encoding="utf-8") as fg, open(out / "examples.jsonl", "w") as fe:
        for synset in progress_bar(  # plain lines in a log (make reproduce > log)
            wn.all_synsets(), total=117659, desc="wordnet-corpus", unit="synset", mininterval=2
        ):
            ident = {"synset": synset.name(), "offset": synset.offset(), "pos": synset.pos()}
            fg.write(json.dumps({**ident, "text": synset.definition()}) + "\n")
            n_gloss += 1
            for text in synset.examples():
                hit = find_lemma(wn, text, synset.lemma_names(), synset.pos())
                lemma, start, end = hit if hit else (None, None, None)
                fe.write(
                    json.dumps({**ident, "text": text, "lemma": lemma, "start": start, "end": end}) + "\n"
                )
                n_ex += 1
                n_found += hit is not None
    return {"glosses": n_gloss, "examples": n_ex, "examples_with_lemma": n_found}
