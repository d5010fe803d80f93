"""The teacher cache on disk: memory-mapped arrays keyed by a hash of each sequence's tokens.

Layout of ``teacher.cache_dir`` (written atomically as one folder, see :class:`CacheWriter`)::

    meta.json                 format, provenance, compatibility fields, array shapes and dtypes
    stats.json                rows, duplicates, bytes, build time, mean teacher tail mass per tau
    keys.bin                  uint64 [N]        sequence key (see :func:`sequence_keys`)
    topk_log_probs.bin        float16 [N, L, k] teacher log-probs at tau=1 of its top-k tokens
    topk_indices.bin          int32  [N, L, k]  their token ids (descending)
    lse.bin                   float32 [N, L]    logsumexp of all logits (raw logits = log-probs + lse)
    lse_tau.bin               float32 [N, L, T] logsumexp(z / tau) for each stored tau
    tail_tau.bin              float32 [N, L, T] log teacher mass outside the top-k at each tau
    hidden.bin                float16|float32 [N, L, d] teacher last hidden states (absent: none)

A sequence's key is a 64-bit BLAKE2b hash of its token ids (padding replaced by -1), so a
training run finds its rows whatever the order, sharding or seed that produced its batches, as long
as the same sequences were cached.

Integrity: meta.json records the size and sha256 of every ``.bin`` file. Opening checks the sizes
(with ``DSKD_VERIFY=full``: every sha256 and a scan of all values); every looked-up batch is checked
for NaN (and for infinities, except the -inf a log-probability or tail mass may legitimately be), so
a damaged row is refused before it reaches a loss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dskd.errors import ArtifactMismatchError, DSKDError
from dskd.io import read_artifact_json, verify_files, verify_level, write_json_atomic
from dskd.losses.topk import TeacherTopK

FORMAT_VERSION = 1
META_FILE = "meta.json"
STATS_FILE = "stats.json"
HIDDEN_DTYPES = ("float16", "float32", "none")
COMPAT_FIELDS = ("format_version", "teacher", "tokenizer_fingerprint", "data_fingerprint", "top_k", "seq_len")
LOG_SPACE = ("topk_log_probs", "tail_tau")
"""Arrays where -inf is a valid value (probability 0); any other infinity or NaN marks a damaged row."""
_REBUILD = "Delete it and rebuild it with `dskd cache build CONFIG`."
_SCAN_ROWS = 256


def sequence_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
    """uint64 key of each row of ``input_ids [B, L]`` (positions with ``attention_mask == 0`` as -1)."""
    ids = torch.where(attention_mask.bool(), input_ids, -1).to("cpu", torch.int32).numpy().astype("<i4")
    return np.array(
        [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in ids],
        dtype=np.uint64,
    )


@dataclass
class CachedOutputs:
    """The teacher's outputs for one batch, as the online teacher would give them to the module."""

    topk: TeacherTopK
    """Top-k log-probs, ids, logsumexp and tail at the requested tau, each ``[B, L, ...]``."""
    hidden: torch.Tensor | None
    """Teacher last hidden states ``[B, L, d]`` in float32 (None when the cache holds none)."""


def _arrays(meta: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    n, L, k, t = meta["rows"], meta["seq_len"], meta["top_k"], len(meta["taus"])
    out = {
        "keys": ("uint64", (n,)),
        "topk_log_probs": ("float16", (n, L, k)),
        "topk_indices": ("int32", (n, L, k)),
        "lse": ("float32", (n, L)),
        "lse_tau": ("float32", (n, L, t)),
        "tail_tau": ("float32", (n, L, t)),
    }
    if meta["hidden_dtype"] != "none":
        out["hidden"] = (meta["hidden_dtype"], (n, L, meta["hidden_size"]))
    return out


def damaged(name: str, values: np.ndarray) -> bool:
    """Whether cached ``values`` of array ``name`` hold NaN, or an infinity it may not hold."""
    if not np.issubdtype(values.dtype, np.floating):
        return False
    bad = np.isnan(values) | (values == np.inf)
    if name not in LOG_SPACE:
        bad |= values == -np.inf
    return bool(bad.any())


class CacheWriter:
    """Appends rows to a new cache folder (a context manager).

    Leaving the ``with`` block writes meta.json and stats.json and moves the folder onto
    ``directory``; on an exception nothing replaces ``directory``. ``overwrite`` and ``inputs``: see
    :func:`dskd.outputs.check_output`.
    """

    def __init__(
        self, directory: str | Path, meta: dict[str, Any], overwrite: bool = False, inputs: Iterable[str] = ()
    ) -> None:
        from dskd.outputs import artifact_dir

        if meta["hidden_dtype"] not in HIDDEN_DTYPES:
            raise DSKDError(
                f"hidden dtype {meta['hidden_dtype']!r} is not one of {', '.join(HIDDEN_DTYPES)}."
            )
        self.directory = Path(directory)
        self.meta = dict(meta, format_version=FORMAT_VERSION, rows=0)
        self.seen: set[int] = set()
        self.duplicates = 0
        self.tail_mass = np.zeros(len(meta["taus"]))
        self._ctx = artifact_dir(self.directory, "cache", overwrite, list(inputs))
        self._files: dict[str, Any] = {}
        self._hashes = {name: hashlib.sha256() for name in _arrays(self.meta)}
        self.extra_stats: dict[str, Any] = {}
        """Added to stats.json (e.g. build time)."""

    def __enter__(self) -> CacheWriter:
        self._tmp = self._ctx.__enter__()
        self._files = {name: open(self._tmp / f"{name}.bin", "wb") for name in _arrays(self.meta)}
        return self

    def add(self, keys: np.ndarray, topk: list[TeacherTopK], hidden: torch.Tensor | None) -> int:
        """Append the rows whose key is new; ``topk`` has one entry per stored tau. Returns rows added."""
        keep = []
        for i, key in enumerate(keys.tolist()):
            if key in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(key)
                keep.append(i)
        if not keep:
            return 0
        idx = torch.tensor(keep)
        first = topk[0]
        rows = {
            "keys": keys[keep],
            "topk_log_probs": first.log_probs[idx].to(torch.float16),
            "topk_indices": first.indices[idx].to(torch.int32),
            "lse": first.lse[idx].float(),
            "lse_tau": torch.stack([t.lse_tau[idx] for t in topk], -1).float(),
            "tail_tau": torch.stack([t.tail_tau[idx] for t in topk], -1).float(),
        }
        if "hidden" in self._files:
            h = hidden[idx].float()
            if self.meta["hidden_dtype"] == "float16" and h.abs().max() > torch.finfo(torch.float16).max:
                raise DSKDError(
                    "A teacher hidden state exceeds the float16 range; build the cache with "
                    "--hidden-dtype float32."
                )
            rows["hidden"] = h.to(getattr(torch, self.meta["hidden_dtype"]))
        for name, value in rows.items():
            arr = value if isinstance(value, np.ndarray) else value.cpu().numpy()
            data = np.ascontiguousarray(arr).tobytes()
            self._files[name].write(data)
            self._hashes[name].update(data)
        self.tail_mass += torch.stack(
            [(t.tail_tau[idx] - t.lse_tau[idx]).exp().mean() for t in topk]
        ).double().numpy() * len(keep)
        self.meta["rows"] += len(keep)
        return len(keep)

    def __exit__(self, exc_type, exc, tb) -> None:
        for f in self._files.values():
            f.close()
        if exc_type is None:
            n = max(self.meta["rows"], 1)
            self.meta["arrays"] = {
                k: {"dtype": d, "shape": list(s)} for k, (d, s) in _arrays(self.meta).items()
            }
            self.meta["files"] = {
                f"{k}.bin": {"size": (self._tmp / f"{k}.bin").stat().st_size, "sha256": h.hexdigest()}
                for k, h in self._hashes.items()
            }
            stats = {
                "rows": self.meta["rows"],
                "duplicates_skipped": self.duplicates,
                "bytes": sum((self._tmp / f"{k}.bin").stat().st_size for k in self._files),
                "mean_tail_mass": {str(t): m / n for t, m in zip(self.meta["taus"], self.tail_mass)},
                **self.extra_stats,
            }
            write_json_atomic(self._tmp / META_FILE, self.meta)
            write_json_atomic(self._tmp / STATS_FILE, stats)
        self._ctx.__exit__(exc_type, exc, tb)


class CachedTeacher:
    """Read side of the cache: ``lookup(input_ids, attention_mask)`` -> :class:`CachedOutputs`.

    Stands in for the online teacher in the training module (``teacher.mode=cached``): no teacher
    model is loaded and no teacher forward runs.
    """

    def __init__(self, directory: str | Path, meta: dict[str, Any], tau: float) -> None:
        self.directory = Path(directory)
        self.meta = meta
        self.tau = tau
        self.tau_index = [float(t) for t in meta["taus"]].index(float(tau))
        self.arrays = {
            name: np.memmap(self.directory / f"{name}.bin", dtype=dtype, mode="r", shape=shape)
            for name, (dtype, shape) in _arrays(meta).items()
        }
        keys = np.asarray(self.arrays["keys"])
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]

    @classmethod
    def open(
        cls,
        directory: str | Path,
        tau: float,
        need_hidden: bool = False,
        **expected: Any,
    ) -> CachedTeacher:
        """Open the cache in ``directory``; refuse it (:class:`ArtifactMismatchError` naming the field)
        unless every given ``expected`` field (see :data:`COMPAT_FIELDS`) matches, it holds ``tau``
        and, with ``need_hidden``, hidden states."""
        directory = Path(directory)
        if not (directory / META_FILE).is_file():
            raise DSKDError(
                f"No teacher cache at {directory} (teacher.cache_dir). Build it with "
                "`dskd cache build CONFIG`, or use teacher.mode=online."
            )
        meta = read_artifact_json(directory / META_FILE, _REBUILD)
        missing = [
            f for f in (*COMPAT_FIELDS, "rows", "taus", "hidden_dtype", "hidden_size") if f not in meta
        ]
        if missing:
            raise DSKDError(
                f"{directory / META_FILE} lacks {', '.join(missing)}; the cache is damaged. {_REBUILD}"
            )
        verify_files(directory, meta.get("files", {}), _REBUILD)
        advice = (
            "Rebuild it for this run with `dskd cache build CONFIG` (or point teacher.cache_dir at the "
            "matching cache)."
        )
        for name, want in dict(expected, format_version=FORMAT_VERSION).items():
            if want is not None and str(meta.get(name)) != str(want):
                raise ArtifactMismatchError(
                    f"The teacher cache at {directory} does not match the run: field '{name}' is "
                    f"{meta.get(name)!r} in the cache but {want!r} in use. {advice}"
                )
        if float(tau) not in [float(t) for t in meta["taus"]]:
            raise ArtifactMismatchError(
                f"The teacher cache at {directory} does not match the run: field 'tau' is {meta['taus']} "
                f"in the cache but loss.kd.tau={tau} in use. {advice}"
            )
        if need_hidden and meta["hidden_dtype"] == "none":
            raise ArtifactMismatchError(
                f"The teacher cache at {directory} does not match the run: field 'hidden_dtype' is 'none' "
                "(no hidden states) but method=dskd needs them for the sense loss. Rebuild it with "
                "`dskd cache build CONFIG --hidden-dtype float16`."
            )
        cache = cls(directory, meta, tau)
        if verify_level() == "full":
            cache.scan()
        return cache

    def _damaged(self, name: str, rows: str) -> DSKDError:
        return DSKDError(
            f"The teacher cache at {self.directory}: array '{name}' has NaN or infinite values in {rows}. "
            f"{_REBUILD}"
        )

    def scan(self) -> None:
        """Refuse the cache if any stored row is damaged (reads every value; ``DSKD_VERIFY=full``)."""
        for name, arr in self.arrays.items():
            for start in range(0, len(arr), _SCAN_ROWS):
                if damaged(name, arr[start : start + _SCAN_ROWS]):
                    raise self._damaged(name, f"rows {start}..{min(start + _SCAN_ROWS, len(arr)) - 1}")

    def __len__(self) -> int:
        return len(self._sorted)

    def rows(self, keys: Iterable[int] | np.ndarray) -> np.ndarray:
        """Row of each key; a key not in the cache raises :class:`ArtifactMismatchError`."""
        keys = np.asarray(keys, dtype=np.uint64)
        pos = np.searchsorted(self._sorted, keys).clip(max=max(len(self._sorted) - 1, 0))
        found = self._sorted[pos] == keys if len(self._sorted) else np.zeros(len(keys), bool)
        if not found.all():
            m = self.meta
            raise ArtifactMismatchError(
                f"{int((~found).sum())} of {len(keys)} sequences of this batch are not in the teacher cache "
                f"at {self.directory}: it was built for other data (seeds {m.get('seeds')}, world size "
                f"{m.get('world_size')}, data.num_workers {m.get('num_workers')}, {m.get('train_batches')} "
                "training batches per rank). Rebuild it with the run's config and seeds, e.g. "
                "`dskd cache build CONFIG --seeds 0 1 2`, or use teacher.mode=online."
            )
        return self._order[pos]

    def lookup(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, device: torch.device | None = None
    ) -> CachedOutputs:
        """The cached teacher outputs of a batch ``[B, L]`` (on ``device``, default the ids' device)."""
        if input_ids.shape[-1] != self.meta["seq_len"]:
            raise ArtifactMismatchError(
                f"The teacher cache holds sequences of {self.meta['seq_len']} tokens but the batch has "
                f"{input_ids.shape[-1]}; field 'seq_len' differs. Rebuild the cache for data.seq_len."
            )
        rows = self.rows(sequence_keys(input_ids, attention_mask))
        device = device or input_ids.device
        a = self.arrays

        def take(name: str, *tail) -> torch.Tensor:
            values = a[name][rows]
            if damaged(name, values):
                raise self._damaged(name, f"rows {sorted(rows.tolist())} of this batch")
            x = torch.from_numpy(np.ascontiguousarray(values[(..., *tail)]))
            return x.to(device, non_blocking=True)

        t = self.tau_index
        topk = TeacherTopK(
            take("topk_log_probs").float(),
            take("topk_indices").long(),
            take("lse"),
            take("lse_tau", t),
            take("tail_tau", t),
        )
        hidden = take("hidden").float() if "hidden" in a else None
        return CachedOutputs(topk, hidden)
