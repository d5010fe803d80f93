"""Negation polarity: a word built from a known base with an odd number of negating affixes negates it.

The affix rules are data (``lexicon/negation_affixes.json``; see ``lexicon/README.md``).
A rule strips one prefix or suffix when the rest is a known word of at least ``min_base_chars``
characters, both words have an allowed part of speech and, for prefixes, share one (a word with no
known part of speech, e.g. one only an importer gave, passes these checks), and the word is not listed
as an exception. Stripping repeats on the rest; an odd count makes the word the negation of the final
base (``pol = -1``), an even count leaves it as it is (``pol = +1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dskd.core.errors import DSKDError
from dskd.core.io import read_json
from dskd.resources import resource

DEFAULT_RULES = resource("lexicon", "negation_affixes.json")
_ADJ = {"a", "s"}  # WordNet adjective and adjective satellite


@dataclass(frozen=True)
class AffixRule:
    affix: str
    prefix: bool
    pos: frozenset[str]
    """Parts of speech the negated word may have (WordNet letters n, v, a, r; s counts as a)."""
    base_pos: frozenset[str]
    """Parts of speech the base may have."""
    before: str | None = None
    """consonant | vowel: what the base must start with (h counts as both); None: anything."""
    min_base_chars: int | None = None
    """Overrides the global minimum base length for this affix."""

    def fits(self, base: str) -> bool:
        first = base[:1]
        if self.before == "vowel":
            return first in "aeiouh"
        if self.before == "consonant":
            return first.isalpha() and first not in "aeiou"
        return True


@dataclass(frozen=True)
class AffixRules:
    rules: tuple[AffixRule, ...]
    min_base_chars: int
    exceptions: frozenset[str]

    @classmethod
    def load(cls, path: str | Path | None = None) -> AffixRules:
        """Read the rules file (default: ``lexicon/negation_affixes.json``)."""
        path = Path(path) if path else DEFAULT_RULES
        try:
            data = read_json(path)
            rules = [
                AffixRule(
                    r["affix"],
                    kind == "prefixes",
                    frozenset(r["pos"]),
                    frozenset(r.get("base_pos", r["pos"])),
                    r.get("before"),
                    r.get("min_base_chars"),
                )
                for kind in ("prefixes", "suffixes")
                for r in data[kind]
            ]
            return cls(tuple(rules), int(data["min_base_chars"]), frozenset(data.get("exceptions", [])))
        except OSError as e:
            raise DSKDError(f"Cannot read the negation affix rules '{path}': {e}.") from e
        except (ValueError, KeyError, TypeError) as e:
            raise DSKDError(
                f"Negation affix rules '{path}' are malformed ({type(e).__name__}: {e}); expected keys "
                "min_base_chars, prefixes, suffixes (lists of {affix, pos[, base_pos, before, "
                "min_base_chars]}), "
                "exceptions (see lexicon/README.md)."
            ) from e


def _pos_ok(word_pos: frozenset[str] | set[str] | None, allowed: frozenset[str]) -> bool:
    if not word_pos:
        return True
    return any((p if p not in _ADJ else "a") in allowed for p in word_pos)


def _share_pos(a: set[str] | None, b: set[str] | None) -> bool:
    """True when both words share a part of speech (or either has none known)."""
    if not a or not b:
        return True
    norm = lambda ps: {p if p not in _ADJ else "a" for p in ps}  # noqa: E731
    return bool(norm(a) & norm(b))


class Polarity:
    """``pol(word) -> (sign, base)`` against a set of known words with their parts of speech."""

    def __init__(self, known: Mapping[str, set[str]], rules: AffixRules):
        self.known = known
        self.rules = rules
        self._cache: dict[str, tuple[int, str]] = {}

    def _strip_once(self, word: str) -> str | None:
        for rule in self.rules.rules:
            a = rule.affix
            if rule.prefix:
                rest = word[len(a) :].lstrip("-") if word.startswith(a) else None
            else:
                rest = word[: -len(a)].rstrip("-") if word.endswith(a) else None
            if (
                rest
                and len(rest) >= (rule.min_base_chars or self.rules.min_base_chars)
                and rest in self.known
                and rule.fits(rest)
                and _pos_ok(self.known.get(word), rule.pos)
                and _pos_ok(self.known[rest], rule.base_pos)
                and (not rule.prefix or _share_pos(self.known.get(word), self.known[rest]))
            ):
                return rest
        return None

    def __call__(self, word: str) -> tuple[int, str]:
        """(-1, base) when ``word`` negates ``base``; (+1, word) otherwise."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        count, cur = 0, word
        letters = word.replace("-", "")
        if letters.isalpha() and letters.islower():
            while cur not in self.rules.exceptions and (nxt := self._strip_once(cur)) is not None:
                cur, count = nxt, count + 1
        out = (-1, cur) if count % 2 else (1, word)
        self._cache[word] = out
        return out
