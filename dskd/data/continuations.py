"""Teacher continuations (paper recipe, ``data.targets=teacher``): the teacher's own greedy continuation
of each prompt, built by their own stage and read by the training stream.

The stage (:func:`build`; `dskd continuations build CONFIG`, a stage of `dskd reproduce` and
`dskd ablate`, run by `dskd train` itself on one process) runs the teacher greedily for ``new_tokens``
tokens after every prompt (a continuation stops early at a stop token, which it keeps) and writes
``<continuations_dir>/<key>.json`` atomically, where the key hashes the teacher, the tokenizer
fingerprint, the prompts and ``new_tokens``. The stream then trains on prompt + continuation with labels
over all positions; :func:`read_continuations` refuses missing files with the command that builds them.

The pass is sharded: prompts are sorted by length (longest first) and cut into batches of
``batch_size``; under torch.distributed rank r generates batches r, r + world, ... on its own device,
every rank receives all slices, rank 0 writes the file and all ranks meet at a barrier. A batch holds
the same prompts in the same order whatever the number of ranks, so the continuations do not depend on it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dskd.config.schema import ExperimentConfig
from dskd.core.devices import all_gather_object, barrier, local_device, rank_world
from dskd.core.errors import ArtifactMismatchError, DSKDError
from dskd.core.io import provenance, read_artifact_json, write_json_atomic
from dskd.core.outputs import StageResult
from dskd.core.progress import progress_bar
from dskd.core.stamps import stage_key
from dskd.core.stopping import stop_cleanly
from dskd.corpora.sources import iter_documents
from dskd.data.config import DataConfig
from dskd.models.config import TeacherConfig
from dskd.models.loading import load_tokenizer, tokenizer_fingerprint
from dskd.models.shared import TeacherHolder, held

FORMAT = 2
"""Version of the cache files (2: continuations end at any stop token of the generation config)."""


def prompt_key(prompt: str) -> str:
    return hashlib.blake2b(prompt.encode("utf-8"), digest_size=16).hexdigest()


def cache_key(teacher: str, tokenizer_fp: str, prompts: Sequence[str], new_tokens: int) -> str:
    """Name of the continuation file for these prompts (changes with teacher, tokenizer, data or length)."""
    h = hashlib.sha256(f"{FORMAT}|{teacher}|{tokenizer_fp}|{new_tokens}|".encode())
    for p in prompts:
        h.update(prompt_key(p).encode())
    return h.hexdigest()[:24]


def batch_plan(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Prompt indices in batches of ``batch_size``, longest prompts first (little padding; a batch too
    large for the device fails at once, not at the end)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def stop_tokens(model, eos: int | None) -> list[int]:
    """The tokens that end a continuation: the tokenizer's EOS and every EOS of the model's generation
    config (an instruct model may end a turn with another token, e.g. Llama 3's ``<|eot_id|>``)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None or isinstance(configured, int):
        configured = [] if configured is None else [configured]
    return sorted({*configured, *([] if eos is None else [eos])})


def left_padded(ids: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token-id sequences, left-padded to the longest, on ``device``."""
    width = max(len(e) for e in ids)
    inputs = torch.tensor([[pad] * (width - len(e)) + e for e in ids], device=device)
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in ids], device=device)
    return inputs, mask


def greedy_batch(model, ids: list[list[int]], new_tokens: int, pad: int, eos: int | None) -> list[list[int]]:
    """Greedy continuations of token-id prompts in one left-padded batch (each ends at its first stop
    token, kept; :func:`stop_tokens`)."""
    stops = stop_tokens(model, eos)
    inputs, mask = left_padded(ids, pad, next(model.parameters()).device)
    width = inputs.shape[1]
    with torch.no_grad():
        gen = model.generate(
            input_ids=inputs,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=stops or None,
        )
    out = []
    for row in gen[:, width:].tolist():
        cont = []
        for t in row:
            cont.append(t)
            if t in stops:
                break
        out.append(cont)
    return out


def shard_continuations(
    model,
    tokenizer,
    prompts: Sequence[str],
    new_tokens: int,
    batch_size: int = 8,
    shard: tuple[int, int] = (0, 1),
) -> dict[int, list[int]]:
    """prompt index -> greedy continuation ids, for the batches (:func:`batch_plan`) of ``shard``
    (rank, world)."""
    rank, world = shard
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    mine = batch_plan([len(e) for e in ids], batch_size)[rank::world]
    out: dict[int, list[int]] = {}
    for batch in progress_bar(mine, desc="teacher continuations", disable=rank != 0 or len(mine) <= 1):
        out.update(zip(batch, greedy_batch(model, [ids[i] for i in batch], new_tokens, pad, eos)))
    return out


def greedy_continuations(
    model, tokenizer, prompts: Sequence[str], new_tokens: int, batch_size: int = 8
) -> list[list[int]]:
    """Greedy continuation ids of each prompt, in prompt order (one process)."""
    got = shard_continuations(model, tokenizer, prompts, new_tokens, batch_size)
    return [got[i] for i in range(len(prompts))]


@dataclass(frozen=True)
class ContinuationSet:
    """One file of continuations: ``new_tokens`` tokens of ``teacher`` after each of ``prompts``."""

    prompts: tuple[str, ...]
    """The prompts, each once, in the order of the data."""
    teacher: str
    """``model@revision`` of the teacher."""
    tokenizer_fp: str
    """:func:`dskd.models.loading.tokenizer_fingerprint` of the tokenizer that reads the ids."""
    new_tokens: int

    def path(self, continuations_dir: str | Path) -> Path:
        key = cache_key(self.teacher, self.tokenizer_fp, self.prompts, self.new_tokens)
        return Path(continuations_dir) / f"{key}.json"


def continuation_sets(
    data: DataConfig, teacher: TeacherConfig, tokenizer, seed: int
) -> list[ContinuationSet]:
    """The files a run of ``data`` with ``seed`` reads: its train + val prompts grouped by the length of
    continuation their source asks for (shortest first, the same order on every rank)."""
    groups: dict[int, list[str]] = {}
    for src in [*data.train, *data.val]:
        docs = iter_documents([src], tokenizer, seed=seed)
        prompts = groups.setdefault(src.teacher_new_tokens or data.teacher_new_tokens, [])
        prompts.extend(doc.meta.get("prompt", doc.text) for doc in docs)
    name, fp = f"{teacher.model}@{teacher.revision}", tokenizer_fingerprint(tokenizer)
    return [ContinuationSet(tuple(dict.fromkeys(p)), name, fp, n) for n, p in sorted(groups.items())]


def _read(path: Path, tokenizer_fp: str) -> dict[str, list[int]]:
    redo = "Delete it; it is computed again from the teacher."
    data = read_artifact_json(path, redo)
    if not isinstance(data.get("meta"), dict) or not isinstance(data.get("targets"), dict):
        raise DSKDError(f"Teacher-continuation file {path} lacks 'meta' or 'targets'; it is damaged. {redo}")
    if data["meta"].get("tokenizer_fingerprint") != tokenizer_fp:
        raise ArtifactMismatchError(
            f"Teacher-continuation file {path} was built for another tokenizer; delete it."
        )
    return data["targets"]


def missing_continuations(data: DataConfig, teacher: TeacherConfig, tokenizer, seed: int) -> list[Path]:
    """The continuation files a run of ``data`` with ``seed`` reads that are not there yet."""
    files = [s.path(data.continuations_dir) for s in continuation_sets(data, teacher, tokenizer, seed)]
    return [f for f in files if not f.is_file()]


def read_continuations(
    data: DataConfig, teacher: TeacherConfig, tokenizer, seed: int
) -> dict[str, list[int]]:
    """prompt_key -> continuation ids of every prompt of a run; a DSKDError naming the command that
    builds them when a file is missing (training never runs the teacher for them itself)."""
    out: dict[str, list[int]] = {}
    for s in continuation_sets(data, teacher, tokenizer, seed):
        path = s.path(data.continuations_dir)
        if not path.is_file():
            raise DSKDError(
                f"data.targets=teacher trains on the teacher's continuations, and those of this run "
                f"({len(s.prompts)} prompts, {s.new_tokens} new tokens) are not in {path.parent}. Build "
                "them first with `dskd continuations build CONFIG [key=value ...]` (the run's config and "
                "overrides; under torchrun or srun every process generates a share)."
            )
        out |= _read(path, s.tokenizer_fp)
    return out


def load_or_build(
    continuations_dir: str | Path,
    wanted: ContinuationSet,
    load_teacher: Callable,
    tokenizer,
    batch_size: int = 8,
) -> dict[str, list[int]]:
    """prompt_key -> continuation ids of ``wanted``, from its file or computed once by all ranks together.

    Collective under torch.distributed (every rank calls it): the file is read when every rank sees
    it, else each rank generates its slice with ``load_teacher()`` (the model, on the rank's own
    device), the slices are all-gathered, rank 0 writes the file, and all ranks wait for it.
    """
    path = wanted.path(continuations_dir)
    if all(all_gather_object(path.is_file())):
        return _read(path, wanted.tokenizer_fp)
    prompts = list(wanted.prompts)
    shard = rank_world()
    mine = shard_continuations(load_teacher(), tokenizer, prompts, wanted.new_tokens, batch_size, shard)
    merged: dict[int, list[int]] = {}
    for part in all_gather_object(mine):
        merged.update(part)
    continuations = {prompt_key(p): merged[i] for i, p in enumerate(prompts)}
    if shard[0] == 0:
        meta = {
            "format": FORMAT,
            "teacher": wanted.teacher,
            "tokenizer_fingerprint": wanted.tokenizer_fp,
            "new_tokens": wanted.new_tokens,
            "prompts": len(prompts),
            "world_size": shard[1],
            "provenance": provenance("data.targets"),
        }
        write_json_atomic(path, {"meta": meta, "targets": continuations})
    barrier()
    return continuations


def continuations_key(data: DataConfig, teacher: TeacherConfig, seeds: list[int]) -> str:
    """The stage key of the continuations of the runs of ``data`` with ``seeds`` (what the stamp of
    ``data.continuations_dir`` holds): the teacher and what decides the prompts and their lengths."""
    prompts = {k: getattr(data, k) for k in ("train", "val", "teacher_new_tokens")}
    name = f"{teacher.model}@{teacher.revision}"
    return stage_key("teacher-continuations", name, teacher.dtype, prompts, sorted(seeds))


@stop_cleanly("the teacher continuations build")
def build(
    cfg: ExperimentConfig, seeds: list[int] | None = None, teachers: TeacherHolder | None = None
) -> StageResult:
    """The teacher-continuations stage: every continuation file the runs of ``cfg`` with ``seeds``
    (default ``[cfg.seed]``) read, generated where missing (collective: every process of a group
    generates a share), written to ``data.continuations_dir`` with its ``stats.json``. ``teachers``:
    the process's held teacher (default: one loaded for this stage, gone when it ends)."""
    t0 = time.perf_counter()
    data, teacher = cfg.data, cfg.teacher
    tokenizer = load_tokenizer(teacher.model, teacher.revision)
    sets = dict.fromkeys(
        s for seed in seeds or [cfg.seed] for s in continuation_sets(data, teacher, tokenizer, seed)
    )
    missing = [s for s in sets if not s.path(data.continuations_dir).is_file()]
    with held(teachers) as holder:  # loaded on the first missing file, once for all lengths and seeds

        def load_teacher():
            return holder.get(teacher, local_device())

        for s in sets:
            load_or_build(data.continuations_dir, s, load_teacher, tokenizer, data.continuations_batch_size)
    stats = {
        "files": sorted(s.path(data.continuations_dir).name for s in sets),
        "prompts": sum(len(s.prompts) for s in sets),
        "generated_files": len(missing),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    out = Path(data.continuations_dir)
    if rank_world()[0] == 0:
        write_json_atomic(out / "stats.json", stats)
    return StageResult(out, stats)
