"""Teacher targets on several processes: batched generation equals one prompt at a time, the ranks'
slices partition the prompts, and a real 2-process (gloo) pass equals the one-process pass exactly."""

from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.multiprocessing as mp

from dskd.data.continuations import (
    ContinuationSet,
    batch_plan,
    greedy_continuations,
    load_or_build,
    prompt_key,
    shard_continuations,
)
from dskd.testing.fixtures import llama_config, random_model_dir

VOCAB = 40
PROMPTS = [" ".join(f"t{3 + (7 * i + j) % 37}" for j in range(1 + (5 * i) % 11)) for i in range(13)]
WANTED = ContinuationSet(tuple(dict.fromkeys(PROMPTS)), "tiny", "fp", 5)
"""Five new tokens after each prompt of a teacher named tiny (the fingerprint only names the file)."""
"""Thirteen word-tokenizer prompts of 1..11 tokens."""


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    config = llama_config(VOCAB, 32, 2, max_len=64)
    config.initializer_range = 0.3  # large random weights: continuations vary, some stop at EOS
    return random_model_dir(tmp_path_factory.mktemp("teacher"), config)


def _load(path):
    from dskd.models.loading import load_causal_lm, load_tokenizer

    return load_causal_lm(path, "float32"), load_tokenizer(path)


def test_batch_plan_is_longest_first_and_covers_every_prompt():
    plan = batch_plan([3, 7, 1, 7, 5], 2)
    assert plan == [[1, 3], [4, 0], [2]]


def test_batched_generation_equals_one_prompt_at_a_time(teacher_dir):
    model, tok = _load(teacher_dir)
    alone = greedy_continuations(model, tok, PROMPTS, new_tokens=6, batch_size=1)
    assert len({len(tok(p)["input_ids"]) for p in PROMPTS}) > 5  # real left padding in the batches
    for batch_size in (3, 8):
        assert greedy_continuations(model, tok, PROMPTS, 6, batch_size) == alone
    assert all(1 <= len(c) <= 6 for c in alone) and any(len(set(c)) > 3 for c in alone)
    assert any(len(c) < 6 and c[-1] == tok.eos_token_id for c in alone)  # early stops, EOS kept


def test_rank_slices_partition_the_prompts(teacher_dir):
    model, tok = _load(teacher_dir)
    whole = dict(enumerate(greedy_continuations(model, tok, PROMPTS, 4, batch_size=2)))
    slices = [shard_continuations(model, tok, PROMPTS, 4, 2, shard=(r, 3)) for r in range(3)]
    assert sum(len(s) for s in slices) == len(PROMPTS)
    assert {k: v for s in slices for k, v in s.items()} == whole
    assert all(len(s) >= 4 for s in slices)  # 7 batches of 2 dealt round-robin: 3, 2, 2 batches


def _worker(rank: int, port: int, teacher: str, cache: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        model, tok = _load(teacher)
        loads = []

        def load_teacher():
            loads.append(rank)
            return model

        targets = load_or_build(cache, WANTED, load_teacher, tok, batch_size=2)
        again = load_or_build(cache, WANTED, load_teacher, tok, batch_size=2)
        torch.save({"targets": targets, "again": again, "loads": loads}, f"{out}-{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_build_the_one_process_targets(teacher_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache, out = tmp_path / "two", str(tmp_path / "rank")
    mp.spawn(_worker, args=(port, str(teacher_dir), str(cache), out), nprocs=2, join=True)
    ranks = [torch.load(f"{out}-{r}.pt") for r in (0, 1)]
    model, tok = _load(teacher_dir)
    one = load_or_build(tmp_path / "one", WANTED, lambda: model, tok, batch_size=2)
    assert one == {prompt_key(p): c for p, c in zip(PROMPTS, greedy_continuations(model, tok, PROMPTS, 5))}
    for r in ranks:
        assert r["targets"] == one and r["again"] == one
        assert len(r["loads"]) == 1  # the second call read the file on both ranks
    (written,) = cache.glob("*.json")  # one file, written by rank 0, nothing left behind
    assert [p.name for p in cache.iterdir()] == [written.name]
    data = json.loads(written.read_text())
    assert data["targets"] == one and data["meta"]["world_size"] == 2

    def fail():
        raise AssertionError("the continuations were generated again")

    assert load_or_build(cache, WANTED, fail, tok, batch_size=2) == one  # a later run


def test_a_continuation_ends_at_any_stop_token_of_the_model(teacher_dir):
    """A generation-config EOS the tokenizer does not know (an instruct model's end of turn) ends it too."""
    model, tok = _load(teacher_dir)
    free = greedy_continuations(model, tok, PROMPTS, 6, batch_size=4)
    turn_end = next(c[1] for c in free if len(c) > 2 and c[1] not in (c[0], tok.eos_token_id))
    model.generation_config.eos_token_id = [turn_end]
    stopped = greedy_continuations(model, tok, PROMPTS, 6, batch_size=4)
    for a, b in zip(free, stopped):
        cut = next((i for i, t in enumerate(a) if t in (turn_end, tok.eos_token_id)), len(a) - 1)
        assert b == a[: cut + 1]  # the same tokens up to the first stop, that stop kept, nothing after
    assert stopped != free
