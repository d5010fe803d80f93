"""Teacher targets (paper recipe): the teacher's own greedy continuation of each prompt, cached on disk.

One preprocessing pass runs the teacher greedily for ``new_tokens`` tokens after every prompt (a
continuation stops early at EOS, which it keeps) and writes ``<cache_dir>/<key>.json`` atomically,
where the key hashes the teacher, the tokenizer fingerprint, the prompts and ``new_tokens``.
The stream then trains on prompt + continuation with labels over all positions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from dskd.errors import ArtifactMismatchError, DSKDError
from dskd.io import provenance, read_artifact_json, write_json_atomic

FORMAT = 1


def prompt_key(prompt: str) -> str:
    return hashlib.blake2b(prompt.encode("utf-8"), digest_size=16).hexdigest()


def cache_key(teacher: str, tokenizer_fp: str, prompts: Sequence[str], new_tokens: int) -> str:
    """Name of the cache file for these prompts (changes with teacher, tokenizer, data or length)."""
    h = hashlib.sha256(f"{FORMAT}|{teacher}|{tokenizer_fp}|{new_tokens}|".encode())
    for p in prompts:
        h.update(prompt_key(p).encode())
    return h.hexdigest()[:24]


def greedy_continuations(
    model, tokenizer, prompts: Sequence[str], new_tokens: int, batch_size: int = 8
) -> list[list[int]]:
    """Greedy continuation ids of each prompt (left-padded batches; ends early at EOS, kept)."""
    import torch
    from tqdm.auto import tqdm

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = next(model.parameters()).device
    out: list[list[int]] = []
    for i in tqdm(
        range(0, len(prompts), batch_size), desc="teacher targets", disable=len(prompts) <= batch_size
    ):
        enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[i : i + batch_size]]
        width = max(len(e) for e in enc)
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc], device=device)
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        for row in gen[:, width:].tolist():
            cont = []
            for t in row:
                cont.append(t)
                if t == eos:
                    break
            out.append(cont)
    return out


def load_or_build(
    cache_dir: str | Path,
    prompts: Iterable[str],
    teacher_name: str,
    tokenizer_fp: str,
    new_tokens: int,
    load_teacher,
    tokenizer,
    batch_size: int = 8,
) -> dict[str, list[int]]:
    """prompt_key -> continuation ids, from the cache or computed once (``load_teacher()``: the model)."""
    prompts = list(dict.fromkeys(prompts))
    path = Path(cache_dir) / f"{cache_key(teacher_name, tokenizer_fp, prompts, new_tokens)}.json"
    if path.is_file():
        redo = "Delete it; it is computed again from the teacher."
        data = read_artifact_json(path, redo)
        if not isinstance(data.get("meta"), dict) or not isinstance(data.get("targets"), dict):
            raise DSKDError(f"Teacher-target cache {path} lacks 'meta' or 'targets'; it is damaged. {redo}")
        if data["meta"].get("tokenizer_fingerprint") != tokenizer_fp:
            raise ArtifactMismatchError(
                f"Teacher-target cache {path} was built for another tokenizer; delete it."
            )
        return data["targets"]
    conts = greedy_continuations(load_teacher(), tokenizer, prompts, new_tokens, batch_size)
    targets = {prompt_key(p): c for p, c in zip(prompts, conts)}
    meta = {
        "format": FORMAT,
        "teacher": teacher_name,
        "tokenizer_fingerprint": tokenizer_fp,
        "new_tokens": new_tokens,
        "prompts": len(prompts),
        "provenance": provenance("data.targets"),
    }
    write_json_atomic(path, {"meta": meta, "targets": targets})
    return targets
