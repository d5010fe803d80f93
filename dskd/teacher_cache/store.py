"""The teacher cache on disk: memory-mapped arrays keyed by a hash of each sequence's tokens.

Layout of ``cache.dir`` (written atomically as one folder, see :class:`CacheWriter`);
N sequences of L tokens, T stored temperatures, S = ``cache.samples``, R stored hidden rows::

    meta.json                 format, provenance, compatibility fields, array shapes and dtypes
    stats.json                rows, duplicates, bytes, build time (top-k: mean teacher tail mass per tau)
    keys.bin                  uint64 [N]        sequence key (see :func:`sequence_keys`)
    targets=sampled (dskd.losses.sampled), drawn at the one stored tau:
    sample_ids.bin            uint8 [N, L, S, 3] distinct drawn token ids, 24-bit little endian
    sample_counts.bin         uint8 [N, L, S]   how often each was drawn (sum S; 0 on unused slots)
    entropy.bin               float32 [N, L]    the teacher's exact entropy at tau
    top1.bin                  uint8 [N, L, 3]   the teacher's most likely token, 24-bit
    targets=topk (dskd.losses.topk):
    topk_log_probs.bin        float16 [N, L, k] teacher log-probs at tau=1 of its top-k tokens
    topk_indices.bin          int32  [N, L, k]  their token ids (descending)
    lse.bin                   float32 [N, L]    logsumexp of all logits (raw logits = log-probs + lse)
    lse_tau.bin               float32 [N, L, T] logsumexp(z / tau) for each stored tau
    tail_tau.bin              float32 [N, L, T] log teacher mass outside the top-k at each tau
    hidden (absent with hidden dtype none):
    hidden.bin                float16|float32 [N, L, d] (positions all) or [R, d] (positions sense)
    hidden_index.bin          int32 [N, L]      positions sense: row of hidden.bin, -1 where not stored
    hidden_tokens.bin         uint8 [V]         positions sense: target tokens whose positions are stored

A sequence's key is a 64-bit BLAKE2b hash of its token ids (padding replaced by -1), so a
training run finds its rows whatever the order, sharding or seed that produced its batches, as long
as the same sequences were cached.

Integrity: meta.json records the size and sha256 of every ``.bin`` file. Opening checks the sizes
(with ``DSKD_VERIFY=full``: every sha256 and a scan of all values); every looked-up batch is checked
for NaN (and for infinities, except the -inf a log-probability or tail mass may legitimately be) and
for its structure (:func:`structure_problem`: sample counts summing to ``cache.samples``, token ids
below the vocabulary size, hidden rows that exist), so a damaged row is refused before it reaches a
loss. These per-batch checks read only the rows the batch reads anyway (a full scan at open would read
the whole memory-mapped cache); ``benchmarks/cache_checks.py`` measures their cost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dskd.core.errors import ArtifactMismatchError, DSKDError
from dskd.core.io import MappedFiles, read_artifact_json, verify_files, verify_level, write_json_atomic
from dskd.core.outputs import artifact_dir
from dskd.losses.sampled import TeacherSamples
from dskd.losses.topk import TeacherTopK

FORMAT_VERSION = 2
META_FILE = "meta.json"
STATS_FILE = "stats.json"
HIDDEN_DTYPES = ("float16", "float32", "none")
TARGETS = ("sampled", "topk")
COMPAT_FIELDS = (
    "format_version",
    "teacher",
    "tokenizer_fingerprint",
    "data_fingerprint",
    "targets",
    "top_k",
    "samples",
    "seed",
    "seq_len",
)
LOG_SPACE = ("topk_log_probs", "tail_tau")
"""Arrays where -inf is a valid value (probability 0); any other infinity or NaN marks a damaged row."""
ID_BYTES = 3
"""Bytes of a stored token id in a sampled cache (vocabularies below 2^24 = 16.7M tokens)."""
_REBUILD = "Delete it and rebuild it with `dskd cache build CONFIG`."
_SCAN_ROWS = 256

Targets = TeacherTopK | TeacherSamples


def sequence_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int) -> np.ndarray:
    """uint64 key of each row of ``input_ids [B, W]`` (positions with ``attention_mask == 0`` as -1),
    hashed as if right-padded to ``width`` (the cache's ``seq_len``), so a sequence has one key whatever
    the width of the batch that holds it."""
    ids = torch.where(attention_mask.bool(), input_ids, -1).to("cpu", torch.int32)
    if width > ids.shape[-1]:
        ids = torch.nn.functional.pad(ids, (0, width - ids.shape[-1]), value=-1)
    ids = ids.numpy().astype("<i4")
    return np.array(
        [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in ids],
        dtype=np.uint64,
    )


def pack_ids(ids: torch.Tensor) -> np.ndarray:
    """Token ids ``[...]`` as 24-bit little-endian bytes ``uint8 [..., 3]``."""
    x = ids.to("cpu", torch.int64).numpy().astype("<u4")
    return x[..., None].view(np.uint8)[..., :ID_BYTES].copy() if x.ndim else x.view(np.uint8)[:ID_BYTES]


def unpack_ids(packed: np.ndarray) -> torch.Tensor:
    """The int64 token ids of ``uint8 [..., 3]`` bytes (see :func:`pack_ids`)."""
    b = torch.from_numpy(np.ascontiguousarray(packed)).long()
    return b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)


@dataclass
class CachedOutputs:
    """The teacher's outputs for one batch, as the online teacher would give them to the module."""

    targets: Targets
    """KD targets at the requested tau: top-k log-probs (:class:`TeacherTopK`) or samples
    (:class:`TeacherSamples`), each ``[B, L, ...]``."""
    hidden: torch.Tensor | None
    """Teacher last hidden states ``[B, L, d]`` in float32 (None when the cache holds none; zeros
    where ``hidden_stored`` is false)."""
    hidden_stored: torch.Tensor | None
    """``[B, L]`` bool: positions whose hidden state the cache holds (None: all or none)."""


def _arrays(meta: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    n, L, t = meta["rows"], meta["seq_len"], len(meta["taus"])
    out: dict[str, tuple[str, tuple[int, ...]]] = {"keys": ("uint64", (n,))}
    if meta["targets"] == "sampled":
        s = meta["samples"]
        out |= {
            "sample_ids": ("uint8", (n, L, s, ID_BYTES)),
            "sample_counts": ("uint8", (n, L, s)),
            "entropy": ("float32", (n, L)),
            "top1": ("uint8", (n, L, ID_BYTES)),
        }
    else:
        k = meta["top_k"]
        out |= {
            "topk_log_probs": ("float16", (n, L, k)),
            "topk_indices": ("int32", (n, L, k)),
            "lse": ("float32", (n, L)),
            "lse_tau": ("float32", (n, L, t)),
            "tail_tau": ("float32", (n, L, t)),
        }
    if meta["hidden_dtype"] != "none":
        d = meta["hidden_size"]
        if meta["hidden_positions"] == "all":
            out["hidden"] = (meta["hidden_dtype"], (n, L, d))
        else:
            out["hidden"] = (meta["hidden_dtype"], (meta["hidden_rows"], d))
            out["hidden_index"] = ("int32", (n, L))
            out["hidden_tokens"] = ("uint8", (meta["vocab_size"],))
    return out


def bytes_per_position(
    meta: dict[str, Any], hidden_size: int | None = None, hidden_fraction: float | None = None
) -> dict[str, float]:
    """Bytes per token position of each per-position array of the layout ``meta`` describes
    (``targets``, ``samples`` or ``top_k``, ``taus``, ``hidden_dtype``, ``hidden_positions``), with
    ``hidden_size`` (default the cache's) and, for hidden positions sense, ``hidden_fraction`` of the
    positions holding a state (default the cache's own). Per-sequence keys and the per-cache token
    table are left out (8 bytes per sequence, 1 byte per vocabulary entry)."""
    one = dict(meta, rows=1, seq_len=1, hidden_rows=1, vocab_size=1)
    one["hidden_size"] = hidden_size or meta["hidden_size"]
    if hidden_fraction is None and meta.get("rows"):
        hidden_fraction = meta.get("hidden_rows", 0) / (meta["rows"] * meta["seq_len"])
    out = {}
    for name, (dtype, shape) in _arrays(one).items():
        if name in ("keys", "hidden_tokens"):
            continue
        size = float(np.dtype(dtype).itemsize * np.prod(shape))
        sparse = name == "hidden" and one.get("hidden_positions") == "sense"
        out[name] = size * (hidden_fraction or 0.0) if sparse else size
    return out


def encode_targets(targets: list[TeacherTopK] | TeacherSamples, keep: torch.Tensor) -> dict[str, Any]:
    """The stored arrays of rows ``keep`` of a batch's targets (top-k: one entry per stored tau)."""
    if isinstance(targets, TeacherSamples):
        return {
            "sample_ids": pack_ids(targets.ids[keep]),
            "sample_counts": targets.counts[keep].to(torch.uint8),
            "entropy": targets.entropy[keep].float(),
            "top1": pack_ids(targets.top1[keep]),
        }
    first = targets[0]
    return {
        "topk_log_probs": first.log_probs[keep].to(torch.float16),
        "topk_indices": first.indices[keep].to(torch.int32),
        "lse": first.lse[keep].float(),
        "lse_tau": torch.stack([t.lse_tau[keep] for t in targets], -1).float(),
        "tail_tau": torch.stack([t.tail_tau[keep] for t in targets], -1).float(),
    }


def pad_positions(name: str, values: np.ndarray, length: int, samples: int | None) -> np.ndarray:
    """``values`` ``[n, W, ...]`` of array ``name`` right-padded to ``length`` positions with values
    that pass the integrity checks (token id 0, all ``samples`` draws on the first slot, no hidden row,
    zeros elsewhere): padding positions are never read by a loss, but are checked when looked up."""
    extra = length - values.shape[1]
    if extra <= 0:
        return values
    fill = np.zeros((values.shape[0], extra, *values.shape[2:]), dtype=values.dtype)
    if name == "sample_counts":
        fill[..., 0] = samples
    elif name == "hidden_index":
        fill[...] = -1
    return np.concatenate([values, fill], axis=1)


def damaged(name: str, values: np.ndarray) -> bool:
    """Whether cached ``values`` of array ``name`` hold NaN, or an infinity it may not hold."""
    if not np.issubdtype(values.dtype, np.floating):
        return False
    bad = np.isnan(values) | (values == np.inf)
    if name not in LOG_SPACE:
        bad |= values == -np.inf
    return bool(bad.any())


def structure_problem(name: str, values: np.ndarray, meta: dict[str, Any]) -> str | None:
    """What is structurally wrong with cached ``values`` of array ``name`` (ids unpacked), or None:
    sample counts not summing to ``samples`` at a position (every position holds ``samples`` draws),
    token ids outside the vocabulary, hidden-state rows that do not exist (``-1``: none stored).
    NumPy, not torch: a sum or max over a batch's values is several times faster on the CPU."""
    if name == "sample_counts":
        sums = values.sum(-1, dtype=np.uint16)  # at most 255 slots x 255 draws
        bad = sums != meta["samples"]
        if bad.any():
            return (
                f"sample counts sum to {int(sums[bad][0])} at {int(bad.sum())} positions, not "
                f"cache.samples={meta['samples']}"
            )
        return None
    limits = {
        "sample_ids": (0, meta["vocab_size"], "vocabulary"),
        "top1": (0, meta["vocab_size"], "vocabulary"),
        "topk_indices": (0, meta["vocab_size"], "vocabulary"),
        "hidden_index": (-1, meta.get("hidden_rows", 0), "stored hidden rows"),
    }
    if name not in limits or not values.size:
        return None
    low, high, what = limits[name]
    if low == 0 and values.dtype.kind == "i":  # one pass: a negative id is a huge unsigned one
        outside = values.view(values.dtype.str.replace("i", "u")).max() >= high
    else:
        outside = values.min() < low or values.max() >= high
    if outside:
        bad = values[(values < low) | (values >= high)]
        return f"{bad.size} values lie outside the {what} {low}..{high - 1}, e.g. {int(bad[0])}"
    return None


class SeenKeys:
    """The sequence keys met so far, and how many rows repeated one."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.duplicates = 0

    def new_rows(self, keys: np.ndarray) -> list[int]:
        """Indices of ``keys`` not met before (now met); the others count as duplicates."""
        keep = []
        for i, key in enumerate(keys.tolist()):
            if key in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(key)
                keep.append(i)
        return keep


@dataclass
class RowBlock:
    """The new rows of one batch as stored arrays (CPU), made where the teacher ran (any process) and
    written by the one :class:`CacheWriter` (:meth:`CacheWriter.append`)."""

    arrays: dict[str, np.ndarray]
    """``keys``, the target arrays and, with hidden states, ``hidden`` (positions sense: only the
    stored positions' states, row after row)."""
    hidden_stored: np.ndarray | None
    """``[n, L]`` bool: the positions ``hidden`` holds (positions sense; None otherwise)."""
    tail_mass: np.ndarray | None
    """Top-k: per stored tau, the rows' mean teacher tail mass times their number (None: sampled)."""


def encode_rows(
    keys: np.ndarray,
    keep: list[int],
    targets: list[TeacherTopK] | TeacherSamples,
    hidden: torch.Tensor | None,
    hidden_keep: torch.Tensor | None,
    hidden_dtype: str,
) -> RowBlock:
    """Rows ``keep`` of a batch as :class:`RowBlock`: ``keys`` and ``targets`` of every row, ``hidden``
    states ``[B, L, d]`` in ``hidden_dtype`` (none: not stored), only where ``hidden_keep`` ``[B, L]``
    is set when given (positions sense)."""
    idx = torch.tensor(keep)
    encoded = encode_targets(targets, idx)
    arrays = {
        "keys": keys[keep],
        **{k: np.asarray(v.cpu()) if torch.is_tensor(v) else v for k, v in encoded.items()},
    }
    stored = None
    if hidden_dtype != "none":
        h = hidden[idx].float()
        if hidden_keep is not None:
            kept = hidden_keep[idx].to(h.device)
            stored = kept.cpu().numpy()
            h = h[kept]
        if hidden_dtype == "float16" and h.numel() and h.abs().max() > torch.finfo(torch.float16).max:
            raise DSKDError(
                "A teacher hidden state exceeds the float16 range; build the cache with "
                "--hidden-dtype float32."
            )
        arrays["hidden"] = h.to(getattr(torch, hidden_dtype)).cpu().numpy()
    tail = None
    if isinstance(targets, list):
        means = [(t.tail_tau[idx] - t.lse_tau[idx]).exp().mean() for t in targets]
        tail = torch.stack(means).double().cpu().numpy() * len(keep)
    return RowBlock(arrays, stored, tail)


class CacheWriter:
    """Appends rows to a new cache folder (a context manager).

    ``meta`` holds ``targets`` (sampled | topk), ``hidden_dtype`` and ``hidden_positions`` (all |
    sense). With ``hidden_positions="sense"``, ``hidden_tokens`` (bool ``[V]``, see
    :mod:`dskd.teacher_cache.positions`) is stored, and :meth:`add` is given the positions to keep.
    Leaving the ``with`` block writes meta.json and stats.json and moves the folder onto
    ``directory``; on an exception nothing replaces ``directory``. ``overwrite`` and ``inputs``: see
    :func:`dskd.outputs.check_output`.
    """

    def __init__(
        self,
        directory: str | Path,
        meta: dict[str, Any],
        overwrite: bool = False,
        inputs: Iterable[str] = (),
        hidden_tokens: np.ndarray | None = None,
    ) -> None:
        if meta["hidden_dtype"] not in HIDDEN_DTYPES:
            raise DSKDError(
                f"hidden dtype {meta['hidden_dtype']!r} is not one of {', '.join(HIDDEN_DTYPES)}."
            )
        if meta["targets"] not in TARGETS:
            raise DSKDError(f"cache targets {meta['targets']!r} are not one of {', '.join(TARGETS)}.")
        if meta["targets"] == "sampled" and meta["vocab_size"] > 256**ID_BYTES:
            raise DSKDError(
                f"A vocabulary of {meta['vocab_size']} tokens does not fit the sampled cache's "
                f"{8 * ID_BYTES}-bit ids; use cache.kd_format=topk."
            )
        sparse = meta["hidden_dtype"] != "none" and meta.get("hidden_positions", "all") == "sense"
        if sparse and (hidden_tokens is None or len(hidden_tokens) != meta["vocab_size"]):
            raise DSKDError("hidden_positions=sense needs hidden_tokens, one flag per vocabulary entry.")
        self.directory = Path(directory)
        self.meta = dict(meta, format_version=FORMAT_VERSION, rows=0, hidden_rows=0)
        self.meta.setdefault("hidden_positions", "all")
        self.hidden_tokens = hidden_tokens if sparse else None
        self.keys = SeenKeys()
        self.tail_mass = np.zeros(len(meta["taus"]))
        self.positions = 0
        self._ctx = artifact_dir(self.directory, "cache", overwrite, list(inputs))
        self._files: dict[str, Any] = {}
        self._hashes = {name: hashlib.sha256() for name in _arrays(self.meta)}
        self.extra_stats: dict[str, Any] = {}
        """Added to stats.json (e.g. build time)."""

    def __enter__(self) -> CacheWriter:
        self._tmp = self._ctx.__enter__()
        self._files = {name: open(self._tmp / f"{name}.bin", "wb") for name in _arrays(self.meta)}
        if self.hidden_tokens is not None:
            self._write("hidden_tokens", self.hidden_tokens.astype(np.uint8))
        return self

    def _write(self, name: str, value: Any) -> None:
        arr = value if isinstance(value, np.ndarray) else value.cpu().numpy()
        data = np.ascontiguousarray(arr).tobytes()
        self._files[name].write(data)
        self._hashes[name].update(data)

    def add(
        self,
        keys: np.ndarray,
        targets: list[TeacherTopK] | TeacherSamples,
        hidden: torch.Tensor | None,
        hidden_keep: torch.Tensor | None = None,
    ) -> int:
        """Append the rows whose key is new. ``targets``: top-k (one entry per stored tau) or samples,
        ``[B, W, ...]`` for a batch ``W <= seq_len`` wide (stored right-padded to ``seq_len``, see
        :func:`pad_positions`); ``hidden_keep`` ``[B, W]`` bool: positions whose hidden state to store
        (positions sense).
        Returns rows added."""
        keep = self.keys.new_rows(keys)
        if not keep:
            return 0
        sparse = hidden_keep if self.hidden_tokens is not None else None
        return self.append(encode_rows(keys, keep, targets, hidden, sparse, self.meta["hidden_dtype"]))

    def append(self, block: RowBlock) -> int:
        """Write the rows of ``block`` (from :func:`encode_rows`, on this or another process); returns
        rows added."""
        rows = dict(block.arrays)
        if block.hidden_stored is not None:
            stored = block.hidden_stored
            index = np.full(stored.shape, -1, dtype=np.int32)
            index[stored] = np.arange(int(stored.sum()), dtype=np.int32) + self.meta["hidden_rows"]
            rows["hidden_index"] = index
            self.meta["hidden_rows"] += int(stored.sum())
        L, samples = self.meta["seq_len"], self.meta.get("samples")
        per_row = {"keys"} | ({"hidden"} if block.hidden_stored is not None else set())
        for name, value in rows.items():
            self._write(name, value if name in per_row else pad_positions(name, value, L, samples))
        if block.tail_mass is not None:
            self.tail_mass += block.tail_mass
        n = len(block.arrays["keys"])
        self.positions += n * self.meta["seq_len"]
        self.meta["rows"] += n
        return n

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
            sizes = {k: (self._tmp / f"{k}.bin").stat().st_size for k in self._files}
            stats = {
                "rows": self.meta["rows"],
                "duplicates_skipped": self.keys.duplicates,
                "bytes": sum(sizes.values()),
                "bytes_per_position": {k: v / max(self.positions, 1) for k, v in sizes.items()},
                **(
                    {"hidden_fraction": self.meta["hidden_rows"] / max(self.positions, 1)}
                    if self.hidden_tokens is not None
                    else {}
                ),
                **(
                    {"mean_tail_mass": {str(t): m / n for t, m in zip(self.meta["taus"], self.tail_mass)}}
                    if self.meta["targets"] == "topk"
                    else {}
                ),
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
        self.mapped = MappedFiles.of(self.directory / f"{name}.bin" for name in self.arrays)
        """Checked at every lookup: a file changed in place is one line, not SIGBUS."""
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
        and, with ``need_hidden``, hidden states (where: :meth:`check_hidden_tokens`)."""
        directory = Path(directory)
        if not (directory / META_FILE).is_file():
            raise DSKDError(
                f"No teacher cache at {directory} (cache.dir). Build it with "
                "`dskd cache build CONFIG`, or use teacher.mode=online."
            )
        meta = read_artifact_json(directory / META_FILE, _REBUILD)
        advice = (
            "Rebuild it for this run with `dskd cache build CONFIG` (or point cache.dir at the "
            "matching cache)."
        )

        def mismatch(field: str, have: Any, want: Any) -> ArtifactMismatchError:
            return ArtifactMismatchError(
                f"The teacher cache at {directory} does not match the run: field '{field}' is {have!r} in "
                f"the cache but {want!r} in use. {advice}"
            )

        if meta.get("format_version") != FORMAT_VERSION:
            raise mismatch("format_version", meta.get("format_version"), FORMAT_VERSION)
        missing = [
            f for f in (*COMPAT_FIELDS, "rows", "taus", "hidden_dtype", "hidden_size") if f not in meta
        ]
        if missing:
            raise DSKDError(
                f"{directory / META_FILE} lacks {', '.join(missing)}; the cache is damaged. {_REBUILD}"
            )
        verify_files(directory, meta.get("files", {}), _REBUILD)
        for name, want in expected.items():
            if want is not None and str(meta.get(name)) != str(want):
                raise mismatch(name, meta.get(name), want)
        if float(tau) not in [float(t) for t in meta["taus"]]:
            raise mismatch("tau", meta["taus"], f"loss.kd.tau={tau}")
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

    def check_hidden_tokens(self, tokens: np.ndarray | None) -> None:
        """Refuse the cache unless it holds hidden states wherever the target is in ``tokens``
        (bool ``[V]``; None: at every position)."""
        stored = self.arrays.get("hidden_tokens")
        if stored is None:
            return
        fix = (
            "Rebuild it with the run's lexicon and sense dictionary (`dskd cache build CONFIG`), or with "
            "cache.hidden_positions=all."
        )
        if tokens is None:
            raise ArtifactMismatchError(
                f"The teacher cache at {self.directory} does not match the run: field 'hidden_positions' is "
                "'sense' (hidden states only where the target has senses or neighbours) but the run needs "
                f"them at every position. {fix}"
            )
        tokens = np.asarray(tokens, dtype=bool)
        have = np.asarray(stored, dtype=bool)
        n = min(len(tokens), len(have))
        missing = np.flatnonzero(tokens[:n] & ~have[:n]).tolist() + np.flatnonzero(tokens[n:]).tolist()
        if missing:
            raise ArtifactMismatchError(
                f"The teacher cache at {self.directory} does not match the run: field 'hidden_tokens' lacks "
                f"{len(missing)} target tokens whose positions the run's sense loss can read (e.g. token ids "
                f"{missing[:5]}): the cache was built with another lexicon or sense dictionary. {fix}"
            )

    def _damaged(self, name: str, rows: str | np.ndarray) -> DSKDError:
        return DSKDError(
            f"The teacher cache at {self.directory}: array '{name}' has NaN or infinite values in "
            f"{_where(rows)}. {_REBUILD}"
        )

    def checked(self, name: str, values: np.ndarray, rows: str | np.ndarray) -> torch.Tensor:
        """``values`` of array ``name`` (ids unpacked) as a CPU tensor; a :class:`DSKDError` naming the
        file and ``rows`` (the rows read, or a batch's row indices) if they hold NaN, a forbidden
        infinity or a :func:`structure_problem`."""
        if damaged(name, values):
            raise self._damaged(name, rows)
        x = (
            unpack_ids(values)
            if name in ("sample_ids", "top1")
            else torch.from_numpy(np.ascontiguousarray(values))
        )
        problem = structure_problem(name, x.numpy(), self.meta)
        if problem:
            raise DSKDError(
                f"The teacher cache at {self.directory} is damaged: {name}.bin {problem} in {_where(rows)}. "
                f"{_REBUILD}"
            )
        return x

    def scan(self) -> None:
        """Refuse the cache if any stored row is damaged (reads every value; ``DSKD_VERIFY=full``)."""
        for name, arr in self.arrays.items():
            for start in range(0, len(arr), _SCAN_ROWS):
                self.checked(
                    name,
                    np.array(arr[start : start + _SCAN_ROWS]),
                    f"rows {start}..{min(start + _SCAN_ROWS, len(arr)) - 1}",
                )

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
        """The cached teacher outputs of a batch ``[B, W]``, ``W <= seq_len`` (on ``device``, default
        the ids' device): the first ``W`` positions of each sequence's rows.

        Hidden states stored only at some positions (positions sense) are zeros elsewhere, flagged by
        ``hidden_stored``."""
        L, W = self.meta["seq_len"], input_ids.shape[-1]
        if W > L:
            raise ArtifactMismatchError(
                f"The teacher cache holds sequences of {L} tokens but the batch has {W}; field 'seq_len' "
                "differs. Rebuild the cache for data.seq_len."
            )
        self.mapped.check()
        rows = self.rows(sequence_keys(input_ids, attention_mask, L))
        device = device or input_ids.device
        a = self.arrays

        def take(name: str, *tail) -> torch.Tensor:
            x = self.checked(name, a[name][rows, :W], rows)
            return x[(..., *tail)].contiguous().to(device, non_blocking=True)

        if self.meta["targets"] == "sampled":
            targets: Targets = TeacherSamples(
                take("sample_ids"), take("sample_counts").long(), take("entropy"), take("top1")
            )
        else:
            t = self.tau_index
            targets = TeacherTopK(
                take("topk_log_probs").float(),
                take("topk_indices").long(),
                take("lse"),
                take("lse_tau", t),
                take("tail_tau", t),
            )
        if "hidden" not in a:
            return CachedOutputs(targets, None, None)
        if "hidden_index" not in a:
            return CachedOutputs(targets, take("hidden").float(), None)
        index = self.checked("hidden_index", a["hidden_index"][rows, :W], rows)
        stored = index >= 0
        values = a["hidden"][index[stored].numpy()]
        if damaged("hidden", values):
            raise self._damaged("hidden", rows)
        hidden = torch.zeros(*index.shape, self.meta["hidden_size"])
        hidden[stored] = torch.from_numpy(np.ascontiguousarray(values)).float()
        return CachedOutputs(targets, hidden.to(device), stored.to(device))


def _where(rows: str | np.ndarray) -> str:
    """The rows a refusal names: a description as given, or a batch's row indices (formatted only when
    refusing, not on every batch)."""
    return rows if isinstance(rows, str) else f"rows {sorted(rows.tolist())} of this batch"
