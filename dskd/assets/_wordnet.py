"""Opening a WordNet NLTK data root, and WordNet's morphology (used by the builders and by alignment)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def open_wordnet(root: str | Path) -> Any:
    """An NLTK WordNet reader over the NLTK data root ``root`` (registered on ``nltk.data.path``).

    NLTK 3.10 refuses corpus folders outside ``nltk.data.path``, so the root is registered first.
    """
    # deferred: nltk takes 1.4 s to import; listing and fetching assets never open WordNet
    import nltk.corpus.reader

    root = str(Path(root).resolve())
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    with warnings.catch_warnings():  # "multilingual functions are not available": no OMW wanted
        warnings.simplefilter("ignore", UserWarning)
        return nltk.corpus.reader.WordNetCorpusReader(str(Path(root) / "corpora" / "wordnet"), None)


def base_forms(wn: Any, form: str, pos: str) -> list[str]:
    """Every base form WordNet's morphology gives ``form`` as ``pos`` ('felt', v -> felt, feel).

    NLTK's public ``morphy`` returns only the first; this is the one call of its private ``_morphy``
    (tests/test_assets.py fails if NLTK changes it).
    """
    return wn._morphy(form, pos)
