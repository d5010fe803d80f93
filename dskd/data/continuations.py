"""Teacher targets (paper recipe): the teacher's own greedy continuation of each prompt, cached on disk.

One preprocessing pass runs the teacher greedily for ``new_tokens`` tokens after every prompt (a
continuation stops early at EOS, which it keeps) and writes ``<cache_dir>/<key>.json`` atomically,
where the key hashes the teacher, the tokenizer fingerprint, the prompts and ``new_tokens``.
The stream then trains on prompt + continuation with labels over all positions.

The pass is sharded: prompts are sorted by length (longest first) and cut into batches of
``batch_size``; under torch.distributed rank r generates batches r, r + world, ... on its own device,
every rank receives all slices, rank 0 writes the file and all ranks meet at a barrier. A batch holds
the same prompts in the same order whatever the number of ranks, so the targets do not depend on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from dskd.core.devices import all_gather_object, barrier, rank_world
from dskd.core.errors import ArtifactMismatchError, DSKDError
from dskd.core.io import provenance, read_artifact_json, write_json_atomic

FORMAT = 2
"""Version of the cache files (2: continuations end at any stop token of the generation config)."""


def prompt_key(prompt: str) -> str:
    return hashlib.blake2b(prompt.encode("utf-8"), digest_size=16).hexdigest()


def cache_key(teacher: str, tokenizer_fp: str, prompts: Sequence[str], new_tokens: int) -> str:
    """Name of the cache file for these prompts (changes with teacher, tokenizer, data or length)."""
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


def left_padded(ids: list[list[int]], pad: int, device):
    """(input_ids, attention_mask) of token-id sequences, left-padded to the longest, on ``device``."""
    import torch

    width = max(len(e) for e in ids)
    inputs = torch.tensor([[pad] * (width - len(e)) + e for e in ids], device=device)
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in ids], device=device)
    return inputs, mask


def greedy_batch(model, ids: list[list[int]], new_tokens: int, pad: int, eos: int | None) -> list[list[int]]:
    """Greedy continuations of token-id prompts in one left-padded batch (each ends at its first stop
    token, kept; :func:`stop_tokens`)."""
    import torch

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
    rank: int = 0,
    world: int = 1,
) -> dict[int, list[int]]:
    """prompt index -> greedy continuation ids, for this rank's batches (:func:`batch_plan`)."""
    from tqdm.auto import tqdm

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    mine = batch_plan([len(e) for e in ids], batch_size)[rank::world]
    out: dict[int, list[int]] = {}
    for batch in tqdm(mine, desc="teacher targets", disable=rank != 0 or len(mine) <= 1):
        out.update(zip(batch, greedy_batch(model, [ids[i] for i in batch], new_tokens, pad, eos)))
    return out


def greedy_continuations(
    model, tokenizer, prompts: Sequence[str], new_tokens: int, batch_size: int = 8
) -> list[list[int]]:
    """Greedy continuation ids of each prompt, in prompt order (one process)."""
    got = shard_continuations(model, tokenizer, prompts, new_tokens, batch_size)
    return [got[i] for i in range(len(prompts))]


def _read(path: Path, tokenizer_fp: str) -> dict[str, list[int]]:
    redo = "Delete it; it is computed again from the teacher."
    data = read_artifact_json(path, redo)
    if not isinstance(data.get("meta"), dict) or not isinstance(data.get("targets"), dict):
        raise DSKDError(f"Teacher-target cache {path} lacks 'meta' or 'targets'; it is damaged. {redo}")
    if data["meta"].get("tokenizer_fingerprint") != tokenizer_fp:
        raise ArtifactMismatchError(
            f"Teacher-target cache {path} was built for another tokenizer; delete it."
        )
    return data["targets"]


def load_or_build(
    cache_dir: str | Path,
    prompts: Iterable[str],
    teacher_name: str,
    tokenizer_fp: str,
    new_tokens: int,
    load_teacher: Callable,
    tokenizer,
    batch_size: int = 8,
) -> dict[str, list[int]]:
    """prompt_key -> continuation ids, from the cache file or computed once by all ranks together.

    Collective under torch.distributed (every rank calls it): the file is read when every rank sees
    it, else each rank generates its slice with ``load_teacher()`` (the model, on the rank's own
    device), the slices are all-gathered, rank 0 writes the file, and all ranks wait for it.
    """
    prompts = list(dict.fromkeys(prompts))
    path = Path(cache_dir) / f"{cache_key(teacher_name, tokenizer_fp, prompts, new_tokens)}.json"
    if all(all_gather_object(path.is_file())):
        return _read(path, tokenizer_fp)
    rank, world = rank_world()
    mine = shard_continuations(load_teacher(), tokenizer, prompts, new_tokens, batch_size, rank, world)
    release_device_memory()
    merged: dict[int, list[int]] = {}
    for part in all_gather_object(mine):
        merged.update(part)
    targets = {prompt_key(p): merged[i] for i, p in enumerate(prompts)}
    if rank == 0:
        meta = {
            "format": FORMAT,
            "teacher": teacher_name,
            "tokenizer_fingerprint": tokenizer_fp,
            "new_tokens": new_tokens,
            "prompts": len(prompts),
            "world_size": world,
            "provenance": provenance("data.targets"),
        }
        write_json_atomic(path, {"meta": meta, "targets": targets})
    barrier()
    return targets


def release_device_memory() -> None:
    """Hand a freed teacher's accelerator memory back before training allocates its own."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
