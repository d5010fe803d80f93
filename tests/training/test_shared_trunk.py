"""The shared trunk (student.share_trunk): the same losses and gradients as a student holding copies
of the teacher's frozen modules (online, chunked KD, on-policy, cached with on-policy batches), with
the trunk run once per step; a whole run, its checkpoints and its export unchanged."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from dskd.models.loading import load_causal_lm, load_tokenizer
from dskd.models.student import build_student, decoder_layers
from dskd.senses import SenseDictionary
from dskd.teacher_cache.build import open_cache
from dskd.testing.fixtures import random_batch, write_batch_cache
from dskd.training.module import DistillationModule, DistillationParts
from dskd.training.run import run_dir, train
from tests.sections import settings_of, spec_of

from .tinyrun import VOCAB, random_batches, tiny_config

STUDENT = {"student.num_layers": 3, "student.trainable_top_layers": 1}
"""Of the tiny teacher's 4 layers: a trunk of 2 shared layers, one trainable layer on top."""


def _modules(tmp, teacher_dir, over: dict | None = None, batches=()):
    """(copies, shared) DSKD modules of one teacher; ``batches`` go into a teacher cache when
    ``over`` sets teacher.mode=cached."""
    over = {**STUDENT, "cache.dir": str(tmp / "cache"), "cache.hidden_positions": "all", **(over or {})}
    cfg = tiny_config(tmp, teacher_dir, "dskd", over)
    tok, teacher = load_tokenizer(str(teacher_dir)), load_causal_lm(teacher_dir, dtype="float32")
    senses = SenseDictionary.load(str(tmp / "senses"))
    cached = cfg.teacher.mode == "cached"
    if cached:
        write_batch_cache(cfg.cache.dir, cfg, tok, teacher, batches, "float32")
    modules = []
    for share in (False, True):
        cache = open_cache(spec_of(cfg), tok) if cached else None
        parts = DistillationParts(build_student(cfg.student, teacher, share), teacher, senses, cache=cache)
        module = DistillationModule(settings_of(cfg), parts)
        for signal in module.signals:
            if signal is not None:
                signal.to(torch.device("cpu"))
        modules.append(module)
    return modules


def _step(module: DistillationModule, batch, on_policy: bool = False):
    """(the losses, the gradients of the trainable weights by name) of one step."""
    module.zero_grad(set_to_none=True)
    loss, parts, _ = module.losses(batch, on_policy=on_policy)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}
    return {k: v.item() for k, v in parts.items()}, grads


def _layer_calls(module: DistillationModule, batch, on_policy: bool = False) -> int:
    """How often the teacher's first layer runs in one step (the copies' run is not counted)."""
    calls = []
    hook = decoder_layers(module.teacher)[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        module.losses(batch, on_policy=on_policy)
    finally:
        hook.remove()
    return len(calls)


def _assert_same(copies, shared, batch, on_policy: bool = False) -> None:
    want, want_grads = _step(copies, batch, on_policy)
    got, got_grads = _step(shared, batch, on_policy)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-7), k
    assert got_grads.keys() == want_grads.keys() and want_grads
    for name, g in want_grads.items():
        torch.testing.assert_close(got_grads[name], g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("over", [{}, {"loss.kd.chunk_size": 5}], ids=["logits", "chunked"])
def test_an_online_step_gives_the_losses_and_gradients_of_the_copies_with_one_trunk_forward(
    run_tmp, teacher_dir, over
):
    copies, shared = _modules(run_tmp, teacher_dir, over)
    assert copies.trunk is None and shared.trunk is not None and shared.trunk.depth == 2
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        batch = random_batch(g, 2, 12, VOCAB, positions=3, neighbours=2)
        _assert_same(copies, shared, batch)
        _assert_same(copies, shared, batch, on_policy=True)  # no CE, the live teacher
        assert _layer_calls(shared, batch) == 1
        assert _layer_calls(copies, batch) == 1  # the teacher's; the student ran its own copy


def test_a_cached_run_with_on_policy_batches_gives_the_losses_and_gradients_of_the_copies(
    run_tmp, teacher_dir
):
    g = torch.Generator().manual_seed(1)
    batches = [random_batch(g, 2, 12, VOCAB, positions=3, neighbours=2) for _ in range(2)]
    over = {"teacher.mode": "cached", "data.seq_len": 12, "data.on_policy.fraction": 0.5}
    copies, shared = _modules(run_tmp, teacher_dir, over, batches)
    assert shared.trunk is not None
    for batch in batches:
        _assert_same(copies, shared, batch)  # from the cache: the student runs its trunk itself
        assert _layer_calls(shared, batch) == 1
        _assert_same(copies, shared, batch, on_policy=True)  # the live teacher runs the trunk
        assert _layer_calls(shared, batch, on_policy=True) == 1


def _losses(cfg) -> dict[tuple[int, str], float]:
    with open(run_dir(cfg.runs_dir, cfg.name, cfg.seed) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = ("train/loss", "train/kd", "train/sense", "val/loss")
    return {(int(r["step"]), k): float(r[k]) for r in rows for k in keys if r.get(k)}


@pytest.mark.parametrize("on_policy", [False, True], ids=["data", "on-policy"])
def test_a_shared_run_logs_the_losses_and_exports_the_bytes_of_a_run_with_copies(
    tmp_path, run_tmp, teacher_dir, on_policy
):
    over = {"data.on_policy.fraction": 1.0, "data.on_policy.max_new_tokens": 4} if on_policy else {}
    runs = {}
    for share in (False, True):
        over_run = {**over, "student.share_trunk": share, "runs_dir": str(tmp_path / f"runs-{share}")}
        cfg = tiny_config(run_tmp, teacher_dir, "kd" if on_policy else "dskd", over_run)
        summary = train(cfg, datamodule=random_batches(n=8))
        runs[share] = (cfg, summary)
    (cfg_c, sum_c), (cfg_s, sum_s) = runs[False], runs[True]
    want, got = _losses(cfg_c), _losses(cfg_s)
    assert got.keys() == want.keys() and any(k[1] == "val/loss" for k in want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6), key
    for name in ("model.safetensors", "config.json", "generation_config.json"):
        a, b = Path(sum_c["export_dir"]) / name, Path(sum_s["export_dir"]) / name
        assert a.read_bytes() == b.read_bytes(), name
