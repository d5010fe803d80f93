"""`dskd senses build`: gather keyed teacher states (:mod:`dskd.senses.gather`), cluster them per
key, compose VIDs, save.

Under several processes (``torchrun``; ``torch.distributed`` initialised) each rank gathers every
``world``-th document, and the reservoirs are merged exactly (see :mod:`dskd.senses.reservoir`);
rank 0 clusters and writes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dskd.config.schema import ExperimentConfig
from dskd.core.devices import barrier, local_device, rank_world
from dskd.core.errors import DSKDError
from dskd.core.io import atomic_path, provenance, write_json_atomic
from dskd.core.outputs import StageResult, artifact_dir, check_output
from dskd.core.progress import progress_bar
from dskd.core.stopping import stop_cleanly
from dskd.lexicon.artifact import Lexicon
from dskd.models.loading import load_tokenizer, tokenizer_fingerprint
from dskd.models.shared import TeacherHolder, held
from dskd.senses.compose import compose_vids
from dskd.senses.dictionary import SenseDictionary
from dskd.senses.gather import GatherResult, gather_from_config, merge_across_ranks
from dskd.senses.kmeans import kmeans_padded, pad_groups
from dskd.senses.reservoir import KeyedReservoir

ROWS_FILE = "rows.safetensors"


def overall_sample(res: GatherResult, max_rows_per_key: int) -> KeyedReservoir:
    """Union of the per-source samples, capped at ``max_rows_per_key`` rows per key (uniformly)."""
    total = KeyedReservoir(max_rows_per_key)
    for r in res.reservoirs:
        total.merge(r)
    return total


def cluster(
    sample: KeyedReservoir, k: int, iters: int, seed: int, device: torch.device, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """k-means per key over a reservoir. Returns (key ids, centroids [n, k, d], counts, mean inertia)."""
    keys, counts, rows = sample.grouped()
    if len(keys) == 0:
        raise DSKDError(
            "The corpus gave no key any hidden states, so there is nothing to cluster. Use a larger corpus "
            "(senses.sources) or raise senses.max_tokens."
        )
    n, d = len(keys), rows.shape[1]
    centroids = torch.zeros(n, k, d, dtype=out_dtype)
    nsenses = torch.zeros(n, dtype=torch.long)
    inertia = torch.zeros(n, dtype=torch.float64)
    rows_dev = rows.to(device)
    bar = progress_bar(total=n, unit="key", desc="k-means")
    for idx, x, mask in pad_groups(rows_dev, counts.to(device)):
        r = kmeans_padded(x, mask, k, iters=iters, seed=seed)
        idx = idx.cpu()
        centroids[idx] = r.centroids.to("cpu", out_dtype)
        nsenses[idx] = r.counts.cpu()
        inertia[idx] = r.inertia.double().cpu()
        bar.update(len(idx))
    bar.close()
    return keys, centroids, nsenses, float(inertia[counts > k].mean()) if (counts > k).any() else 0.0


def nearest_sense_mse(
    rows: torch.Tensor, centroids: torch.Tensor, counts: torch.Tensor, index: torch.Tensor, chunk: int = 4096
) -> torch.Tensor:
    """MSE of each ``rows[i]`` to the nearest of the ``counts[index[i]]`` senses ``centroids[index[i]]``."""
    out = []
    for start in range(0, len(rows), chunk):
        x, idx = rows[start : start + chunk].float(), index[start : start + chunk]
        c = centroids[idx].float()  # [n, k, d]
        mse = (x.unsqueeze(1) - c).square().mean(-1)
        valid = torch.arange(c.shape[1]) < counts[idx].unsqueeze(1)
        out.append(mse.masked_fill(~valid, float("inf")).amin(-1))
    return torch.cat(out) if out else torch.zeros(0)


def sense_mse_statistics(
    sample: KeyedReservoir, centroids: torch.Tensor, counts: torch.Tensor, seed: int
) -> dict[str, list[float]]:
    """Percentiles 0..100 of the MSE of every sampled teacher state to the nearest sense of its own key
    (``own_sense_mse_percentiles``) and of a random other key (``unrelated_sense_mse_percentiles``).

    The second puts the sense loss's hinge margin on the teacher's hidden-state scale
    (``loss.sense.margin_quantile``, docs/losses.md). ``centroids``/``counts`` are in the order of
    ``sample.grouped()``'s keys (as :func:`cluster` returns them).
    """
    _, row_counts, rows = sample.grouped()
    own = torch.arange(len(row_counts)).repeat_interleave(row_counts)
    g = torch.Generator().manual_seed(seed)
    other = (own + torch.randint(1, max(len(row_counts), 2), own.shape, generator=g)) % len(row_counts)
    return {
        f"{name}_sense_mse_percentiles": mse_percentiles(nearest_sense_mse(rows, centroids, counts, index))
        for name, index in (("own", own), ("unrelated", other))
    }


def mse_percentiles(mse: torch.Tensor) -> list[float]:
    """Percentiles 0, 1, ..., 100 of ``mse``."""
    return [round(float(v), 6) for v in np.percentile(mse.double().numpy(), np.arange(101))]


def assemble(
    keys: torch.Tensor,
    centroids: torch.Tensor,
    counts: torch.Tensor,
    meta: dict,
    vid_tokens: Mapping[int, Sequence[int]] | None,
) -> tuple[SenseDictionary, int]:
    """Token senses + composed VID senses in one dictionary. Returns (dictionary, VIDs composed)."""
    table_size = max([int(meta["vocab_size"])] + [v + 1 for v in (vid_tokens or {})])
    meta = dict(meta, table_size=table_size)
    tokens_only = SenseDictionary.from_padded(centroids, counts, keys, dict(meta))
    if not vid_tokens:
        return tokens_only, 0
    vkeys, vcents, vcounts = compose_vids(tokens_only, vid_tokens)
    d = SenseDictionary.from_padded(
        torch.cat([centroids, vcents.to(centroids.dtype)]),
        torch.cat([counts, vcounts.to(counts.dtype)]),
        torch.cat([keys, vkeys]),
        meta,
    )
    return d, len(vkeys)


def save_rows(sample: KeyedReservoir, path: Path) -> None:
    """The raw reservoir rows (debug / benchmark artifact): key_ids, counts, rows grouped by key."""
    keys, counts, rows = sample.grouped()
    with atomic_path(path) as tmp:
        save_file({"key_ids": keys, "counts": counts, "rows": rows.contiguous()}, str(tmp))


def load_rows(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = load_file(str(path))
    return t["key_ids"], t["counts"], t["rows"]


def _load_vid_tokens(lexicon_dir: str, tokenizer, vocab_size: int) -> dict[int, tuple[int, ...]]:
    """VID -> member tokens from the lexicon artifact at ``lexicon_dir``."""
    directory = Path(lexicon_dir)
    if not directory.exists():
        raise DSKDError(
            f"No lexicon at {directory}; VID senses are composed from it. Run `dskd lexicon build CONFIG` "
            "first, or set senses.compose_vids=false to build token senses only."
        )
    lex = Lexicon.load(directory)
    lex.check_tokenizer(tokenizer)
    vids = dict(lex.vid_tokens)
    if vids and min(vids) < vocab_size:
        raise DSKDError(
            f"The lexicon at {directory} numbers VIDs from {min(vids)}, inside the teacher's vocabulary "
            f"({vocab_size} logits); rebuild the lexicon for this teacher's tokenizer."
        )
    return vids


@stop_cleanly("the sense dictionary build")
def build(
    cfg: ExperimentConfig,
    progress: bool = True,
    overwrite: bool = False,
    together: bool = False,
    teachers: TeacherHolder | None = None,
) -> StageResult:
    """The senses stage: build the sense dictionary a config describes; rank 0 writes it to
    ``cfg.senses.output_dir`` (see :func:`dskd.outputs.check_output` for ``overwrite``).

    ``together``: every process of the default group calls this (`dskd senses build` under
    :func:`dskd.devices.launcher_group`): each rank gathers its shard on its own device, rank 0 merges,
    clusters and writes, and all ranks return once the dictionary is on disk (stats are rank 0's).
    Otherwise this process builds alone, whatever group it belongs to (`dskd reproduce` runs this
    stage in its first process only). ``teachers``: the process's held teacher (default: one loaded
    for this stage, gone when it ends)."""
    sc = cfg.senses
    if not sc.sources:
        raise DSKDError("senses.sources is empty; name at least one corpus, e.g. `- kind: wordnet_corpus`.")
    with _barrier_after(together), held(teachers) as holder:  # every rank returns once rank 0 has written
        inputs = [cfg.lexicon.output_dir, *([cfg.teacher.model] if Path(cfg.teacher.model).exists() else [])]
        check_output(sc.output_dir, "senses", overwrite, inputs)
        t0 = time.perf_counter()
        rank, world = rank_world() if together else (0, 1)
        device = local_device()
        tokenizer = load_tokenizer(cfg.teacher.model, revision=cfg.teacher.revision)
        fingerprint = tokenizer_fingerprint(tokenizer)
        model = holder.get(cfg.teacher, device)
        vocab_size = model.get_output_embeddings().weight.shape[0]
        vid_tokens = (
            _load_vid_tokens(cfg.lexicon.output_dir, tokenizer, vocab_size) if sc.compose_vids else None
        )
        res = gather_from_config(model, tokenizer, sc, cfg.seed, (rank, world), progress)
        if together:
            res = merge_across_ranks(res)
        if rank != 0:
            return StageResult(Path(sc.output_dir), {})
        sample = overall_sample(res, sc.max_rows_per_key)
        t1 = time.perf_counter()
        out_dtype = next(model.parameters()).dtype
        keys, centroids, counts, inertia = cluster(sample, sc.k, sc.kmeans_iters, cfg.seed, device, out_dtype)
        t2 = time.perf_counter()
        meta = {
            **sense_mse_statistics(sample, centroids, counts, cfg.seed),
            "teacher": cfg.teacher.model,
            "revision": cfg.teacher.revision,
            "tokenizer_fingerprint": fingerprint,
            "layer": "last (after the final norm)",
            "vocab_size": vocab_size,
            "keying": sc.keying,
            "corpus_fingerprint": f"{res.fingerprint:064x}",
            "sources": [vars(s) for s in sc.sources],
            "provenance": provenance(
                "senses", {"lexicon": str(cfg.lexicon.output_dir) if vid_tokens else None}
            ),
        }
        dictionary, n_vids = assemble(keys, centroids, counts, meta, vid_tokens)
        has = torch.zeros(res.occurrences.shape[0], dtype=torch.bool)
        has[keys] = True
        occ = res.occurrences
        stats = {
            "keys": len(dictionary),
            "token_keys": len(keys),
            "vids_composed": n_vids,
            "vids_in_lexicon": len(vid_tokens or {}),
            "rows_gathered": len(sample),
            "mean_senses_per_key": float(dictionary.counts.float().mean()),
            "coverage": float(occ[has].sum() / occ.sum().clamp_min(1)),
            "tokens_processed": res.tokens,
            "positions_keyed": res.positions,
            "mean_inertia": inertia,
            "own_sense_mse_median": meta["own_sense_mse_percentiles"][50],
            "unrelated_sense_mse_median": meta["unrelated_sense_mse_percentiles"][50],
            "gather_seconds": round(res.seconds, 2),
            "kmeans_seconds": round(t2 - t1, 2),
            "build_seconds": round(time.perf_counter() - t0, 2),
            "world_size": world,
            "device": str(device),
        }
        with artifact_dir(sc.output_dir, "senses", overwrite, inputs) as tmp:
            dictionary.save(tmp)
            if sc.save_rows:
                save_rows(sample, tmp / ROWS_FILE)
            stats["build_seconds"] = round(time.perf_counter() - t0, 2)
            write_json_atomic(tmp / "stats.json", stats)
            cfg.save(tmp)
        return StageResult(Path(sc.output_dir), stats)


@contextlib.contextmanager
def _barrier_after(together: bool) -> Iterator[None]:
    """Wait for every rank of a build ``together`` when the block ends; a failure raises at once."""
    yield
    if together:
        barrier()
