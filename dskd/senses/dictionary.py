"""The sense dictionary artifact: the senses of the keys that have any, sparse, saved as safetensors +
JSON metadata.

Layout of ``<dir>/senses.safetensors`` (format version 2): ``rows [senses, d]`` (the senses of the
first key, then the second's, ...; no padding), ``counts [keys]`` (int32, 1..k) and ``key_ids [keys]``
(int64, token ids or VIDs, ascending). Only keys with senses hold rows: at paper scale the keys the
corpus gave the teacher's predictions, with fewer than k rows where a key had fewer states. Version 1
files (``centroids [keys, k, d]``, padded with zero rows to k per key) still load; their padding is
dropped at load. The metadata is stored in the safetensors header (the source of truth) and copied to
``meta.json``; it records the sha256 of each tensor. Loading refuses key ids outside
``0..table_size-1`` (one pass over the key ids, with the default ``DSKD_VERIFY=fast``), non-finite
senses (NaN or inf in any row it loads) and, with ``DSKD_VERIFY=full``, tensors whose sha256 differs
(see :func:`dskd.io.verify_level`). Lookup is one ``index_select`` of ``[keys, k]`` row numbers read
from two dense tables over the key ids (first row, number of senses; 16 bytes per key id).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dskd.core.devices import local_device
from dskd.core.errors import ArtifactMismatchError, DSKDError
from dskd.core.io import MappedFiles, atomic_path, verify_level, write_json_atomic

FORMAT_VERSION = 2
_TENSORS = {1: ("centroids", "counts", "key_ids"), 2: ("rows", "counts", "key_ids")}
"""The tensors of each readable format version (1: senses padded to k rows per key)."""
SENSES_FILE = "senses.safetensors"
META_FILE = "meta.json"
_META_KEY = "dskd_senses_meta"
REQUIRED_META = ("teacher", "tokenizer_fingerprint", "hidden_size", "k", "keying", "table_size")
_REBUILD = "Delete it and rebuild with `dskd senses build CONFIG`."
_CHUNK_BYTES = 1 << 26
INDEX_BYTES = 16
"""Bytes of the lookup index per key id (first row and number of senses, int64 each)."""


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes (any dtype), as recorded in the dictionary's metadata."""
    flat = t.detach().contiguous().cpu().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().data).hexdigest()


def nonfinite_rows(centroids: torch.Tensor) -> torch.Tensor:
    """Indices of the rows of ``centroids [n, ...]`` (a key's padded senses ``[k, d]`` or one sense
    ``[d]`` per row) holding NaN or inf (read in chunks of ~64 MiB).

    A row's sum (accumulated in float32 at least) is finite unless the row holds NaN or inf, or its
    values are too large to add up; the rows whose sum is not finite are then checked value by value.
    """
    row_bytes = max(centroids[0].numel() * centroids.element_size(), 1) if len(centroids) else 1
    step = max(_CHUNK_BYTES // row_bytes, 1)
    acc = torch.float64 if centroids.dtype == torch.float64 else torch.float32
    bad = []
    for start in range(0, len(centroids), step):
        chunk = centroids[start : start + step].flatten(1)
        suspect = torch.nonzero(~torch.isfinite(chunk.sum(1, dtype=acc))).flatten()
        bad.append(start + suspect[~torch.isfinite(chunk[suspect]).all(1)])
    return torch.cat(bad) if bad else torch.zeros(0, dtype=torch.long)


def key_ids_problem(key_ids: torch.Tensor, table_size: int) -> str | None:
    """What is wrong with a dictionary's ``key_ids`` for its key table of ``table_size`` entries
    (None: nothing): ids must lie in ``0..table_size-1``, else the table cannot be built."""
    bad = key_ids[(key_ids < 0) | (key_ids >= table_size)]
    if len(bad):
        return (
            f"{len(bad)} of its {len(key_ids)} key ids lie outside the key table 0..{table_size - 1} "
            f"(table_size {table_size}), e.g. {int(bad[0])}"
        )
    return None


def _resolve_device(device: str | torch.device, nbytes: int) -> tuple[torch.device, bool]:
    """(storage device, pinned). auto: the GPU when the dictionary takes <= 25% of its memory,
    else pinned CPU memory; pinned: CPU pinned memory (per-batch gathers go to the keys' device)."""
    device = str(device)
    if device == "auto":
        gpu = local_device()
        if gpu.type == "cuda":
            if nbytes <= 0.25 * torch.cuda.get_device_properties(gpu).total_memory:
                return gpu, False
            return torch.device("cpu"), True
        return torch.device("cpu"), False
    if device == "pinned":
        return torch.device("cpu"), torch.cuda.is_available()
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise DSKDError(f"senses.device '{device}' is not a device; use auto, cpu, cuda or pinned.") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DSKDError("senses.device=cuda but no CUDA GPU is visible; use senses.device=auto or cpu.")
    if dev.type == "cuda" and dev.index is None:
        dev = local_device()  # this process's GPU, not GPU 0 of every process
    return dev, False


def stored_size(directory: str | Path, keys: torch.Tensor | None = None) -> tuple[int, int]:
    """(senses, bytes) the dictionary saved in ``directory`` holds once loaded (only ``keys``, when
    given): its sense rows plus the key index, read from the small ``counts`` and ``key_ids`` tensors."""
    path = SenseDictionary._path(directory)
    meta = SenseDictionary.read_meta(directory)
    with safe_open(str(path), framework="pt") as f:
        counts, key_ids = f.get_tensor("counts").long(), f.get_tensor("key_ids")
        row_bytes = f.get_slice(_TENSORS[meta["format_version"]][0]).get_shape()[-1]
    row_bytes *= torch.finfo(getattr(torch, meta["dtype"])).bits // 8
    if keys is not None:
        counts = counts[torch.isin(key_ids, keys.reshape(-1))]
    senses = int(counts.sum())
    return senses, senses * row_bytes + INDEX_BYTES * int(meta["table_size"])


@dataclass
class SenseDictionary:
    """Senses per key, stored sparse: ``rows`` holds only the real senses, key after key.

    ``lookup(keys)`` -> (senses [..., k, d], mask [..., k]) through an index from key id to its first
    row and its number of senses (two tables of ``table_size`` entries, 16 bytes per key).
    """

    rows: torch.Tensor
    """``[senses, d]``: the ``counts[i]`` senses of ``key_ids[i]``, for i = 0, 1, ..."""
    counts: torch.Tensor
    """``[keys]`` senses per key (0..k)."""
    key_ids: torch.Tensor
    """``[keys]`` token ids or VIDs."""
    k: int
    """The most senses a key has (``senses.k``): the width of a lookup."""
    meta: dict[str, Any] = field(default_factory=dict)
    mapped: MappedFiles | None = field(default=None, repr=False, compare=False)
    """The file ``rows`` is memory-mapped from (a :meth:`load` on the CPU), checked at every lookup."""

    def __post_init__(self) -> None:
        n = len(self.key_ids)
        total = int(self.counts.sum()) if n else 0
        bad_counts = bool(n) and (int(self.counts.min()) < 0 or int(self.counts.max()) > self.k)
        if self.counts.shape != (n,) or self.rows.dim() != 2 or len(self.rows) != total or bad_counts:
            raise DSKDError(
                f"Sense dictionary tensors disagree: rows {tuple(self.rows.shape)}, counts "
                f"{tuple(self.counts.shape)} summing to {total} (each 0..k={self.k}), key_ids "
                f"{tuple(self.key_ids.shape)}. Rebuild it with `dskd senses build CONFIG`."
            )
        size = int(self.meta.get("table_size", int(self.key_ids.max()) + 1 if n else 0))
        self.meta.setdefault("table_size", size)
        problem = key_ids_problem(self.key_ids, size)
        if problem:
            raise DSKDError(f"The sense dictionary is inconsistent: {problem}. {_REBUILD}")
        dev = self.rows.device
        counts, keys = self.counts.to(dev, torch.long), self.key_ids.to(dev)
        self._start = torch.full((size,), -1, dtype=torch.long, device=dev)
        self._start[keys] = torch.cumsum(counts, 0) - counts
        self._count = torch.zeros(size, dtype=torch.long, device=dev)
        self._count[keys] = counts

    @classmethod
    def from_padded(
        cls, centroids: torch.Tensor, counts: torch.Tensor, key_ids: torch.Tensor, meta: dict[str, Any]
    ) -> SenseDictionary:
        """The dictionary of ``centroids [keys, k, d]`` whose rows past a key's count are padding
        (what k-means gives, and format version 1 files hold): the padding is dropped."""
        n, k, _ = centroids.shape
        if counts.shape != (n,):
            raise DSKDError(
                f"Sense dictionary tensors disagree: centroids {tuple(centroids.shape)}, counts "
                f"{tuple(counts.shape)}. Rebuild it with `dskd senses build CONFIG`."
            )
        real = torch.arange(k, device=centroids.device) < counts.to(centroids.device).unsqueeze(1)
        return cls(centroids[real], counts, key_ids, k, meta)

    @property
    def hidden_size(self) -> int:
        return self.rows.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the senses and the key index (what a device holds)."""
        return self.rows.numel() * self.rows.element_size() + INDEX_BYTES * len(self._start)

    def __len__(self) -> int:
        return len(self.key_ids)

    def to(self, device: str | torch.device) -> SenseDictionary:
        """This dictionary on ``device``."""
        rows = self.rows.to(device)
        mapped = self.mapped if rows.data_ptr() == self.rows.data_ptr() else None  # still the file's pages
        counts, key_ids = self.counts.to(device), self.key_ids.to(device)
        return SenseDictionary(rows, counts, key_ids, self.k, self.meta, mapped)

    def lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Senses of ``keys`` (LongTensor, any shape) on the keys' device.

        Returns senses [..., k, d] (zeros where masked) and mask [..., k]; keys without senses
        (unknown, negative, or out of the table) get an all-False mask.
        """
        if self.mapped is not None:
            self.mapped.check()
        out_dev = keys.device
        keys = keys.to(self._start.device)
        size = len(self._start)
        inside = (keys >= 0) & (keys < size)
        at = keys.clamp(0, max(size - 1, 0))
        start = torch.where(inside, self._start[at], -1)
        count = torch.where(start >= 0, self._count[at], 0)
        slot = torch.arange(self.k, device=keys.device)
        mask = slot < count.unsqueeze(-1)  # [..., k]
        row = torch.where(mask, start.unsqueeze(-1) + slot, 0).reshape(-1)
        if len(self.rows):
            senses = self.rows.index_select(0, row)
        else:  # nothing stored: every mask is all-False
            senses = self.rows.new_zeros(len(row), self.hidden_size)
        senses = senses.to(out_dev, non_blocking=True).view(*keys.shape, self.k, self.hidden_size)
        mask = mask.to(out_dev)
        return senses.masked_fill(~mask.unsqueeze(-1), 0), mask

    def owners(self) -> torch.Tensor:
        """``[senses]`` the index (into ``key_ids``) of the key each row belongs to."""
        return torch.repeat_interleave(torch.arange(len(self), device=self.counts.device), self.counts.long())

    def unrelated_sense_mse_quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1) of the MSE between a teacher state and the nearest sense of an
        unrelated (random other) key, measured at build time: a hinge margin on this teacher's
        hidden-state scale (``loss.sense.margin_quantile``)."""
        percentiles = self.meta.get("unrelated_sense_mse_percentiles")
        if not percentiles:
            raise DSKDError(
                "This sense dictionary holds no sense-distance statistics (it predates them), so "
                "loss.sense.margin_quantile cannot be resolved. Rebuild it with `dskd senses build CONFIG`, "
                "or set loss.sense.margin_quantile=null and give loss.sense.margin."
            )
        return float(np.interp(100.0 * q, np.arange(len(percentiles)), percentiles))

    def restrict(self, keys: torch.Tensor) -> SenseDictionary:
        """A dictionary holding only ``keys`` (those it has); the key table keeps its size."""
        wanted = torch.isin(self.key_ids, keys.reshape(-1).to(self.key_ids.device))
        rows = wanted.to(self.counts.device).repeat_interleave(self.counts.long()).to(self.rows.device)
        return SenseDictionary(
            self.rows[rows],
            self.counts[wanted.to(self.counts.device)],
            self.key_ids[wanted],
            self.k,
            dict(self.meta),
        )

    def check_compatible(
        self,
        teacher_name: str | None = None,
        tokenizer_fingerprint: str | None = None,
        hidden_size: int | None = None,
    ) -> None:
        """Refuse a dictionary built for another teacher, tokenizer or hidden size (names the field)."""
        expected = {
            "teacher": teacher_name,
            "tokenizer_fingerprint": tokenizer_fingerprint,
            "hidden_size": hidden_size,
        }
        for name, want in expected.items():
            if want is None:
                continue
            have = self.meta.get(name)
            if str(have) != str(want):
                raise ArtifactMismatchError(
                    f"The sense dictionary does not match the run: field '{name}' is {have!r} in the "
                    f"dictionary but {want!r} in use. Rebuild it for this teacher/tokenizer with "
                    "`dskd senses build CONFIG` (or point senses.output_dir at the matching dictionary)."
                )

    # ---------------------------------------------------------------- storage

    def save(self, directory: str | Path) -> Path:
        """Write senses.safetensors (atomically) and meta.json into ``directory``."""
        directory = Path(directory)
        meta = dict(
            self.meta, format_version=FORMAT_VERSION, dtype=str(self.rows.dtype).removeprefix("torch.")
        )
        meta.update(keys=len(self), senses=len(self.rows), k=self.k, hidden_size=self.hidden_size)
        tensors = {
            "rows": self.rows.contiguous().cpu(),
            "counts": self.counts.to(torch.int32).cpu(),
            "key_ids": self.key_ids.to(torch.int64).cpu(),
        }
        meta["tensor_sha256"] = {name: tensor_sha256(t) for name, t in tensors.items()}
        path = directory / SENSES_FILE
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta, sort_keys=True, default=str)})
        write_json_atomic(directory / META_FILE, meta)
        self.meta = meta
        return path

    @classmethod
    def read_meta(cls, directory: str | Path) -> dict[str, Any]:
        """The metadata of a saved dictionary (from the safetensors header)."""
        path = cls._path(directory)
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get(_META_KEY)
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise cls._corrupt(path, e) from e
        if raw is None:
            raise DSKDError(f"{path} has no DSKD sense metadata; it was not written by `dskd senses build`.")
        try:
            meta = json.loads(raw)
        except ValueError as e:
            raise cls._corrupt(path, e) from e
        if not isinstance(meta, dict):
            raise DSKDError(f"{path} metadata is a JSON {type(meta).__name__}, not an object. {_REBUILD}")
        if meta.get("format_version") not in _TENSORS:
            raise DSKDError(
                f"{path} has format version {meta.get('format_version')}, this dskd reads "
                f"{' and '.join(map(str, _TENSORS))}; rebuild it with `dskd senses build CONFIG`."
            )
        missing = [m for m in REQUIRED_META if m not in meta]
        if missing:
            raise DSKDError(
                f"{path} metadata lacks {', '.join(missing)}; rebuild with `dskd senses build CONFIG`."
            )
        return meta

    @classmethod
    def load(
        cls, directory: str | Path, device: str | torch.device = "cpu", keys: torch.Tensor | None = None
    ) -> SenseDictionary:
        """Load a saved dictionary (memory-mapped from disk), optionally only ``keys``, onto ``device``.

        device: cpu | cuda | auto (GPU when it fits comfortably, else pinned CPU) | pinned. A format
        version 1 file (senses padded to k rows per key) loads too; its padding is dropped. On the CPU
        without ``keys`` the rows stay the file's pages, so every lookup first checks that the file was
        not changed in place (:class:`~dskd.core.io.MappedFiles`).
        """
        path = cls._path(directory)
        meta = cls.read_meta(directory)
        t = cls._tensors(path, meta)
        if verify_level() == "full":
            cls._check_sha256(path, t, meta)
        problem = key_ids_problem(t["key_ids"], int(meta["table_size"]))
        if problem:
            raise DSKDError(f"The sense dictionary {path} is damaged: {problem}. {_REBUILD}")
        wanted = torch.isin(t["key_ids"], keys.reshape(-1)) if keys is not None else slice(None)
        if "centroids" in t:  # version 1: checked with its padding (damage there is damage too)
            padded, counts, key_ids = t["centroids"][wanted], t["counts"][wanted], t["key_ids"][wanted]
            cls._refuse_nonfinite(path, key_ids, nonfinite_rows(padded))
            d = cls.from_padded(padded, counts, key_ids, meta)
        else:
            d = cls(t["rows"], t["counts"], t["key_ids"], int(meta["k"]), meta)
            d = d.restrict(keys) if keys is not None else d
            cls._refuse_nonfinite(path, d.key_ids, d.owners()[nonfinite_rows(d.rows)].unique())
        dev, pinned = _resolve_device(device, d.nbytes)
        if pinned:
            return cls(d.rows.pin_memory(), d.counts, d.key_ids, d.k, d.meta)
        if dev.type != "cpu":
            return d.to(dev)
        if "rows" in t and d.rows.data_ptr() == t["rows"].data_ptr():  # read from the file's pages
            d.mapped = MappedFiles.of([path])
        return d

    @classmethod
    def _tensors(cls, path: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The file's tensors, memory-mapped (pages are read on first touch), checked by name."""
        try:
            t = load_file(str(path), device="cpu")
        except Exception as e:
            raise cls._corrupt(path, e) from e
        expected = _TENSORS[meta["format_version"]]
        if set(t) != set(expected):
            raise DSKDError(f"{path} holds tensors {sorted(t)}, expected {', '.join(expected)}; rebuild it.")
        return t

    @staticmethod
    def _refuse_nonfinite(path: Path, key_ids: torch.Tensor, bad: torch.Tensor) -> None:
        """Refuse a file whose keys ``key_ids[bad]`` hold NaN or inf."""
        if len(bad):
            ids = key_ids[bad[:5]].tolist()
            raise DSKDError(
                f"The sense dictionary {path} has non-finite (NaN/inf) senses in {len(bad)} of the "
                f"{len(key_ids)} keys loaded (key ids {ids}{'...' if len(bad) > 5 else ''}): it is corrupt. "
                f"{_REBUILD}"
            )

    @staticmethod
    def _path(directory: str | Path) -> Path:
        directory = Path(directory)
        path = directory / SENSES_FILE if directory.is_dir() or not directory.suffix else directory
        if not path.is_file():
            raise DSKDError(
                f"No sense dictionary at {path}. Build it with `dskd senses build CONFIG` "
                "(it writes senses.output_dir)."
            )
        return path

    @staticmethod
    def _check_sha256(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        recorded = meta.get("tensor_sha256")
        if not isinstance(recorded, dict):
            raise DSKDError(
                f"{path} records no tensor sha256 (an older dskd built it); DSKD_VERIFY=full needs them. "
                f"{_REBUILD}"
            )
        for name, t in tensors.items():
            if tensor_sha256(t) != recorded.get(name):
                raise DSKDError(
                    f"The sense dictionary {path}: tensor '{name}' does not match its sha256. {_REBUILD}"
                )

    @staticmethod
    def _corrupt(path: Path, e: Exception) -> DSKDError:
        return DSKDError(
            f"The sense dictionary {path} is truncated or corrupt ({type(e).__name__}: {e}). {_REBUILD}"
        )
