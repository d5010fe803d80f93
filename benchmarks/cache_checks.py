"""Benchmark: cost of the teacher cache's per-batch structural checks (``DSKD_VERIFY=fast``).

Every looked-up batch is checked for its structure (:func:`dskd.teacher_cache.store.structure_problem`:
sample counts summing to ``cache.samples``, token ids inside the vocabulary). This benchmark writes a
cache of one paper-scale batch (8 sequences of 2,048 tokens, V = 128,256; sampled: 64 draws per
position, top-k: k = 1,024; no hidden states) into a temporary folder and times, side by side in one
run, the checks alone against the batch read without them (:meth:`CachedTeacher.lookup` with the
checks switched off): the read is part of every cached training step, so the ratio is an upper bound
on the checks' share of a step. Lookups with and without the checks alternate, and the medians are
compared. The cache's pages are in memory after the first read (as for a cache that fits the page
cache; a read from disk only lowers the ratio).

A third figure puts the checks beside a training step, measured alternately in the same run: the
smallest student a paper-vocabulary run can have, an embedding and an LM head at V = 128,256 and
d = 576 (SmolLM2-135M's width), reads one sequence of 512 tokens from a sampled cache (checks
included), computes the sampled KD loss, and takes an AdamW step. Both sides grow with the tokens of
a batch, and any real student adds layers to the step, so the ratio bounds a real run's from above.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from benchmarks.harness import Figure
from dskd.core.io import read_json
from dskd.losses.config import KDConfig
from dskd.losses.sampled import TeacherSamples, sampled_kd_loss
from dskd.losses.topk import TeacherTopK
from dskd.teacher_cache import store
from dskd.teacher_cache.store import CachedTeacher, CacheWriter, sequence_keys

VOCAB, SAMPLES, TOP_K = 128_256, 64, 1_024
BATCH, SEQ, QUICK_SEQ = 8, 2_048, 256
REPEATS, QUICK_REPEATS = 30, 5
STEP_SEQ, QUICK_STEP_SEQ, STEP_HIDDEN, STEP_REPEATS = 512, 128, 576, 5


def _targets(mode: str, shape: tuple[int, int], gen: torch.Generator) -> TeacherSamples | list[TeacherTopK]:
    """Random teacher targets of ``shape`` [B, L] in the layout of ``mode`` (sampled | topk)."""
    if mode == "sampled":
        ids = torch.randint(VOCAB, (*shape, SAMPLES), generator=gen)  # each drawn once: counts 1
        return TeacherSamples(ids, torch.ones_like(ids), torch.rand(shape, generator=gen), ids[..., 0])
    log_probs = -torch.rand((*shape, TOP_K), generator=gen).cumsum(-1)
    indices = torch.randint(VOCAB, (*shape, TOP_K), generator=gen)
    lse = torch.rand(shape, generator=gen)
    return [TeacherTopK(log_probs, indices, lse, lse, lse - 1.0)]


def _write(directory: Path, mode: str, seq_len: int, batch: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Write a ``mode`` cache of one batch into ``directory``; returns (input_ids, attention_mask)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(VOCAB, (batch, seq_len), generator=gen)
    mask = torch.ones_like(ids)
    meta = {
        "targets": mode,
        "samples": SAMPLES if mode == "sampled" else None,
        "top_k": TOP_K if mode == "topk" else None,
        "seq_len": seq_len,
        "taus": [1.0],
        "vocab_size": VOCAB,
        "hidden_dtype": "none",
        "hidden_size": 0,
    }
    with CacheWriter(directory, meta) as writer:
        writer.add(sequence_keys(ids, mask, seq_len), _targets(mode, (batch, seq_len), gen), None)
    return ids, mask


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _no_checks(*_args) -> None:
    return None


def _measure(cache: CachedTeacher, batch: tuple[torch.Tensor, torch.Tensor], repeats: int) -> dict:
    """Median seconds of the lookup with and without the checks (alternating) and of the checks alone."""
    ids, mask = batch
    names = [n for n in cache.arrays if n != "keys"]
    rows = cache.rows(sequence_keys(ids, mask, ids.shape[1]))
    values = {n: cache.checked(n, cache.arrays[n][rows], "rows").numpy() for n in names}
    times: dict[str, list[float]] = {"with": [], "without": [], "checks": []}
    cache.lookup(ids, mask)  # warm the page cache and allocators
    for i in range(repeats):
        order = ("with", "without") if i % 2 == 0 else ("without", "with")
        for kind in order:
            if kind == "with":
                times[kind].append(_time(lambda: cache.lookup(ids, mask)))
            else:
                with mock.patch.object(store, "structure_problem", _no_checks):
                    times[kind].append(_time(lambda: cache.lookup(ids, mask)))
        times["checks"].append(
            _time(lambda: [store.structure_problem(n, v, cache.meta) for n, v in values.items()])
        )
    return {kind: statistics.median(t) for kind, t in times.items()}


def _checks_vs_step(directory: Path, seq_len: int) -> tuple[float, float]:
    """Median seconds of (the checks of a one-sequence sampled batch, a minimal student's training
    step on it: cached lookup, forward, sampled KD loss, backward, AdamW), measured alternately."""
    ids, mask = _write(directory, "sampled", seq_len, batch=1)
    cache = CachedTeacher(directory, read_json(directory / store.META_FILE), 1.0)
    rows = cache.rows(sequence_keys(ids, mask, seq_len))
    values = {n: cache.checked(n, cache.arrays[n][rows], "rows").numpy() for n in cache.arrays if n != "keys"}
    student = torch.nn.Sequential(torch.nn.Embedding(VOCAB, STEP_HIDDEN), torch.nn.Linear(STEP_HIDDEN, VOCAB))
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)

    def step() -> None:
        loss = sampled_kd_loss(student(ids), cache.lookup(ids, mask).targets, kd=KDConfig())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # allocates the optimizer state
    checks, steps = [], []
    for _ in range(STEP_REPEATS):
        checks.append(_time(lambda: [store.structure_problem(n, v, cache.meta) for n, v in values.items()]))
        steps.append(_time(step))
    return statistics.median(checks), statistics.median(steps)


def bench_cache_checks(quick: bool) -> list[Figure]:
    seq_len = QUICK_SEQ if quick else SEQ
    repeats = QUICK_REPEATS if quick else REPEATS
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode, layout in (("sampled", f"{SAMPLES} draws"), ("topk", f"k = {TOP_K:,}")):
            directory = Path(tmp) / mode
            batch = _write(directory, mode, seq_len)
            cache = CachedTeacher(directory, read_json(directory / store.META_FILE), 1.0)
            t = _measure(cache, batch, repeats)
            figures.append(
                Figure(
                    name=f"cache/{mode}_structural_checks_per_batch",
                    value=t["checks"],
                    unit="s/batch",
                    baseline=t["without"],
                    baseline_name="the batch read (CachedTeacher.lookup) without the checks, same run",
                    goal="informative (an upper bound on the share of a cached step)",
                    note=(
                        f"{BATCH}x{seq_len} tokens, V = {VOCAB:,}, {layout}, CPU, median of {repeats}; "
                        f"lookup with the checks {t['with'] * 1e3:.2f} ms, "
                        f"without {t['without'] * 1e3:.2f} ms"
                    ),
                )
            )
        step_seq = QUICK_STEP_SEQ if quick else STEP_SEQ
        checks, step = _checks_vs_step(Path(tmp) / "step", step_seq)
    figures.append(
        Figure(
            name="cache/sampled_structural_checks_vs_step",
            value=checks,
            unit="s/batch",
            baseline=step,
            baseline_name="training step of a minimal student (embedding + LM head) on the batch, same run",
            goal="ratio <= 0.01",
            met=checks <= 0.01 * step,
            note=(
                f"1x{step_seq} tokens, V = {VOCAB:,}, d = {STEP_HIDDEN}, {SAMPLES} draws, CPU, median of "
                f"{STEP_REPEATS}; the step: lookup with the checks, forward, sampled KD loss, backward, AdamW"
            ),
        )
    )
    return figures
