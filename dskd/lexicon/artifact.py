"""The lexicon artifact: one safetensors file of CSR arrays plus small JSON tables.

Layout of a lexicon folder:
- ``lexicon.safetensors``: int64 arrays ``{syn,ant,hyp}_{indptr,indices,sources}`` (rows = token ids
  ``0..vocab_size-1``; ``sources`` = source bitmask per entry), ``vid_indptr``/``vid_token_ids``
  (tokens of VID ``vocab_size + i``), ``synset_{lemma,antonym}_{indptr,indices}`` (rows = synsets).
- ``synsets.json``: synset names in row order. ``vids.json``: one word per VID (for reading).
- ``meta.json`` (format version, tokenizer name/size/fingerprint, sources, provenance, size and
  sha256 of the three data files, checked at load: see :func:`dskd.io.verify_files`),
  ``stats.json`` and the resolved ``config.yaml``.

Loading also checks the structure of every CSR table (a few vectorised passes over the index
arrays, milliseconds even for a 128k-token vocabulary, so it runs with the default
``DSKD_VERIFY=fast``): pointers start at 0, never decrease and end at the number of entries, and
every entry is a key of the table (token id or VID). A damaged table is refused at load instead of
handing the data module neighbours that are not tokens.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from dskd.core.errors import ArtifactMismatchError, DSKDError
from dskd.core.io import read_artifact_json, read_json, verify_files, write_json_atomic
from dskd.lexicon.mapping import Csr, MappedLexicon
from dskd.models.loading import tokenizer_fingerprint

FORMAT_VERSION = 1
ARRAYS = "lexicon.safetensors"
DATA_FILES = (ARRAYS, "synsets.json", "vids.json")
_REBUILD = "Rebuild it with `dskd lexicon build CONFIG`."
_EMPTY = np.zeros(0, dtype=np.int64)
_RELATIONS = ("syn", "ant", "hyp")
_SYNSET_TABLES = ("synset_lemma", "synset_antonym")


def _csr_problem(indptr: np.ndarray, n_entries: int, rows: int | None) -> str | None:
    """What is wrong with the pointers of a CSR table of ``n_entries`` entries (None: nothing)."""
    if indptr.ndim != 1 or len(indptr) == 0:
        return f"has shape {tuple(indptr.shape)}, not one pointer per row plus one"
    if rows is not None and len(indptr) != rows + 1:
        return f"has {len(indptr)} pointers, not {rows + 1} (one per row plus one)"
    steps = np.diff(indptr)
    if len(steps) and steps.min() < 0:
        row = int(np.argmax(steps < 0))
        return f"decreases at row {row} ({int(indptr[row])} -> {int(indptr[row + 1])})"
    if indptr[0] != 0 or indptr[-1] != n_entries:
        return f"runs from {int(indptr[0])} to {int(indptr[-1])}, not from 0 to its {n_entries} entries"
    return None


def _range_problem(values: np.ndarray, limit: int, what: str) -> str | None:
    """What is wrong with ``values`` that must lie in ``0..limit-1`` (None: nothing)."""
    if len(values) and (values.min() < 0 or values.max() >= limit):
        bad = values[(values < 0) | (values >= limit)]
        return f"holds {len(bad)} entries outside 0..{limit - 1} ({what}), e.g. {int(bad[0])}"
    return None


def structure_problems(arrays: dict[str, np.ndarray], vocab_size: int) -> list[str]:
    """What is structurally wrong with a lexicon's CSR ``arrays`` (empty: nothing found), each
    ``"'<array>' <problem>"``: missing arrays, pointers that do not start at 0, decrease or miss
    the end, and entries that are no key (token ids ``< vocab_size``, VIDs after them)."""
    needed = [f"{r}_{p}" for r in _RELATIONS for p in ("indptr", "indices", "sources")]
    missing = [n for n in needed if n not in arrays]
    if missing:
        return [f"'{n}' is missing" for n in missing]
    n_vids = len(arrays["vid_indptr"]) - 1 if "vid_indptr" in arrays else 0
    keys = vocab_size + max(n_vids, 0)
    tables = [(r, vocab_size, "indices", keys, "token ids and VIDs") for r in _RELATIONS]
    tables += [(t, None, "indices", keys, "token ids and VIDs") for t in _SYNSET_TABLES]
    tables.append(("vid", None, "token_ids", vocab_size, "token ids"))
    problems = []
    for name, rows, entries, limit, what in tables:
        if f"{name}_indptr" not in arrays:
            continue
        values = arrays.get(f"{name}_{entries}", _EMPTY)
        for array, problem in (
            (f"{name}_indptr", _csr_problem(arrays[f"{name}_indptr"], len(values), rows)),
            (f"{name}_{entries}", _range_problem(values, limit, what)),
        ):
            if problem:
                problems.append(f"'{array}' {problem}")
    for rel in _RELATIONS:
        if len(arrays[f"{rel}_sources"]) != len(arrays[f"{rel}_indices"]):
            problems.append(f"'{rel}_sources' has {len(arrays[f'{rel}_sources'])} entries, not one per index")
    return problems


def save_arrays(mapped: MappedLexicon, directory: Path) -> None:
    """Write the arrays and JSON tables of ``mapped`` into ``directory`` (a fresh temporary folder)."""
    tensors: dict[str, np.ndarray] = {}
    for name in ("syn", "ant", "hyp"):
        csr: Csr = getattr(mapped, name)
        tensors.update(
            {f"{name}_indptr": csr.indptr, f"{name}_indices": csr.indices, f"{name}_sources": csr.sources}
        )
    lengths = np.array([len(t) for t in mapped.vid_tokens], dtype=np.int64)
    tensors["vid_indptr"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tensors["vid_token_ids"] = np.array([i for t in mapped.vid_tokens for i in t], dtype=np.int64)
    for name, csr in (("lemma", mapped.synset_lemmas), ("antonym", mapped.synset_antonyms)):
        tensors[f"synset_{name}_indptr"] = csr.indptr
        tensors[f"synset_{name}_indices"] = csr.indices
    save_file({k: np.ascontiguousarray(v, dtype=np.int64) for k, v in tensors.items()}, directory / ARRAYS)
    (directory / "synsets.json").write_text(json.dumps(mapped.synset_names), encoding="utf-8")
    vids = {"first_vid": mapped.vocab_size, "words": mapped.vid_words}
    (directory / "vids.json").write_text(json.dumps(vids, ensure_ascii=False), encoding="utf-8")


def write_meta(directory: Path, meta: dict[str, Any], stats: dict[str, Any]) -> None:
    write_json_atomic(directory / "meta.json", meta)
    write_json_atomic(directory / "stats.json", stats)


class Lexicon:
    """A built lexicon for one tokenizer (see the module docstring for the files).

    Keys are ints: token ids ``< vocab_size`` or VIDs ``>= vocab_size``. The CSR arrays
    (``syn_indptr``/``syn_indices``, ``ant_indptr``/``ant_indices``) index rows by head token id and
    are meant for vectorised use by the data module.
    """

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], directory: Path):
        self.arrays = arrays
        self.meta = meta
        self.directory = directory
        self.vocab_size: int = int(meta["tokenizer"]["vocab_size"])
        for rel in ("syn", "ant", "hyp"):
            for part in ("indptr", "indices", "sources"):
                setattr(self, f"{rel}_{part}", arrays[f"{rel}_{part}"])

    @classmethod
    def load(cls, directory: str | Path) -> Lexicon:
        directory = Path(directory)
        if not (directory / "meta.json").is_file() or not (directory / ARRAYS).is_file():
            raise DSKDError(
                f"No lexicon at '{directory}' (meta.json or {ARRAYS} missing). Build it with "
                "`dskd lexicon build CONFIG` (it writes to `lexicon.output_dir`)."
            )
        meta = read_artifact_json(directory / "meta.json", _REBUILD)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ArtifactMismatchError(
                f"The lexicon at '{directory}' has format version {meta.get('format_version')}, this dskd "
                f"reads version {FORMAT_VERSION}. {_REBUILD}"
            )
        tokenizer = meta.get("tokenizer")
        if not isinstance(tokenizer, dict) or not {"name", "vocab_size", "fingerprint"} <= set(tokenizer):
            raise DSKDError(
                f"{directory / 'meta.json'} lacks the tokenizer's name, vocab_size or fingerprint; the "
                f"artifact is damaged. {_REBUILD}"
            )
        verify_files(directory, meta.get("files", {}), _REBUILD)
        try:
            arrays = load_file(str(directory / ARRAYS))
        except Exception as e:  # safetensors raises its own error types for a damaged file
            raise DSKDError(f"Cannot read {directory / ARRAYS} ({type(e).__name__}: {e}). {_REBUILD}") from e
        problems = structure_problems(arrays, int(tokenizer["vocab_size"]))
        if problems:
            raise DSKDError(
                f"The lexicon {directory / ARRAYS} is damaged: {'; '.join(problems[:3])}"
                f"{' ...' if len(problems) > 3 else ''}. {_REBUILD}"
            )
        return cls(arrays, meta, directory)

    @property
    def tokenizer_name(self) -> str:
        return self.meta["tokenizer"]["name"]

    @property
    def fingerprint(self) -> str:
        return self.meta["tokenizer"]["fingerprint"]

    def _row(self, rel: str, token_id: int) -> np.ndarray:
        if not 0 <= token_id < self.vocab_size:
            return _EMPTY
        indptr = self.arrays[f"{rel}_indptr"]
        return self.arrays[f"{rel}_indices"][indptr[token_id] : indptr[token_id + 1]]

    def neighbours(self, token_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(synonym keys, antonym keys) of a head token id; empty arrays for other ids."""
        return self._row("syn", token_id), self._row("ant", token_id)

    def hypernyms(self, token_id: int) -> np.ndarray:
        """Hypernym keys of a head token (empty unless built with ``lexicon.hypernyms``)."""
        return self._row("hyp", token_id)

    @functools.cached_property
    def vid_tokens(self) -> dict[int, tuple[int, ...]]:
        """VID -> its token ids."""
        indptr, flat = self.arrays["vid_indptr"], self.arrays["vid_token_ids"].tolist()
        bounds = indptr.tolist()
        return {self.vocab_size + i: tuple(flat[bounds[i] : bounds[i + 1]]) for i in range(len(bounds) - 1)}

    @functools.cached_property
    def vid_words(self) -> dict[int, str]:
        """VID -> one word it stands for."""
        data = read_json(self.directory / "vids.json")
        return {data["first_vid"] + i: w for i, w in enumerate(data["words"])}

    @functools.cached_property
    def _synset_rows(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(read_json(self.directory / "synsets.json"))}

    def synset_keys(self, synset_name: str) -> tuple[np.ndarray, np.ndarray]:
        """(keys of the synset's lemmas, keys of its antonyms); empty arrays for an unknown synset."""
        row = self._synset_rows.get(synset_name)
        if row is None:
            return _EMPTY, _EMPTY
        out = []
        for name in ("lemma", "antonym"):
            indptr = self.arrays[f"synset_{name}_indptr"]
            out.append(self.arrays[f"synset_{name}_indices"][indptr[row] : indptr[row + 1]])
        return out[0], out[1]

    def sense_keys(self) -> np.ndarray:
        """Sorted keys the sense loss can look up through this lexicon: heads with synonyms or
        antonyms, their neighbours, the lemmas and antonyms of every synset, and every VID."""
        heads = np.flatnonzero(
            (np.diff(self.arrays["syn_indptr"]) > 0) | (np.diff(self.arrays["ant_indptr"]) > 0)
        )
        n_vids = len(self.arrays.get("vid_indptr", [0])) - 1
        parts = [heads, self.vocab_size + np.arange(n_vids)]
        names = ("syn_indices", "ant_indices", "synset_lemma_indices", "synset_antonym_indices")
        parts += [self.arrays[n] for n in names if n in self.arrays]
        return np.unique(np.concatenate(parts).astype(np.int64))

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Raise ArtifactMismatchError unless ``tokenizer`` is the one this lexicon was built for."""
        if tokenizer_fingerprint(tokenizer) != self.fingerprint:
            raise ArtifactMismatchError(
                f"The lexicon at '{self.directory}' was built for tokenizer '{self.tokenizer_name}' "
                f"(vocab {self.vocab_size}, fingerprint {self.fingerprint[:12]}), not for the tokenizer in "
                "use "
                f"(vocab {len(tokenizer)}). Rebuild it: `dskd lexicon build CONFIG lexicon.tokenizer=...`."
            )
