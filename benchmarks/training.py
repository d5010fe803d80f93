"""Benchmark: DSKD training-step time relative to KD on the tiny preset (goal: ratio <= 1.05).

Both methods train their own copy of the same student on the same batches against one shared online
teacher (``teacher.mode=online``: the forward of the teacher is part of both steps; the preset trains
from a teacher cache, measured in :mod:`benchmarks.teacher_cache`); their steps (forward, losses,
backward, optimizer step) alternate, several times, and the median step times are compared, so
machine noise affects both alike. Batches come from the DSKD data module of the preset (real lexicon
neighbours) and the preset's sense dictionary.

The lexicon and the sense dictionary come from :func:`benchmarks.artifacts.preset_artifacts` (built
from the assets when `dskd reproduce` has not left them).
"""

from __future__ import annotations

import copy
import statistics
import time

from benchmarks.harness import Figure

PRESET = "experiments/tiny/dskd.yaml"
ONLINE = "teacher.mode=online"
"""The step benchmarks run the teacher live; the cached modes build their own caches."""


def _step(module, optimizer, batch) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    loss, parts, _ = module.losses(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, {k: float(v) for k, v in parts.items()}


def interleaved_steps(
    modules: dict, batches: list, lr: float, reduce=statistics.median
) -> tuple[dict[str, float], dict[str, dict]]:
    """One AdamW training step of every module per batch, the order alternating from batch to batch
    so that machine noise affects all alike. The first batch warms up allocators and caches and is
    not timed. Returns (``reduce`` (default: the median) of the step times per module, each module's
    loss parts on the first batch, where all still start from the same weights)."""
    import torch

    opts = {
        k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr)
        for k, m in modules.items()
    }
    names = list(modules)
    times: dict[str, list[float]] = {name: [] for name in names}
    first: dict[str, dict] = {}
    for i, batch in enumerate(batches):
        for name in names if i % 2 == 0 else names[::-1]:
            t, parts = _step(modules[name], opts[name], batch)
            if i == 0:
                first[name] = parts
            else:
                times[name].append(t)
    return {name: reduce(t) for name, t in times.items()}, first


def preset_setup(n_batches: int, quick: bool, preset: str = PRESET, overrides: tuple[str, ...] = ()):
    """(cfg, tokenizer, teacher, student, projection, senses, batches) of a preset with the online teacher
    (and the dotted ``overrides``), for step benchmarks."""
    import itertools

    from benchmarks.artifacts import preset_artifacts
    from dskd.config.loading import load_config
    from dskd.data.stream import META_KEYS
    from dskd.training.run import ModelSpec, build_datamodule, load_models, load_senses

    cfg = preset_artifacts(load_config(preset, [ONLINE, *overrides]), quick)
    tokenizer, teacher, student, projection, _ = load_models(
        ModelSpec(
            cfg.teacher, cfg.student, cfg.trainer, cfg.data.on_policy, cfg.method, cfg.loss.kd.divergence
        )
    )
    senses = load_senses(cfg.senses, cfg.lexicon.output_dir, tokenizer, teacher)
    lexicon_dir = cfg.lexicon.output_dir if cfg.method == "dskd" else None
    dm = build_datamodule(cfg.data, cfg.teacher, cfg.seed, tokenizer, lexicon_dir)
    dm.prepare_data()
    dm.setup("fit")
    batches = [
        {k: v for k, v in b.items() if k not in META_KEYS}
        for b in itertools.islice(iter(dm.train_dataloader()), n_batches)
    ]
    return cfg, tokenizer, teacher, student, projection, senses, batches


def bench_step_time(quick: bool) -> list[Figure]:

    from dskd.training.module import DistillationModule, DistillationParts
    from tests.sections import settings_of

    pairs = 3 if quick else 8
    cfg, tokenizer, teacher, student, projection, senses, batches = preset_setup(pairs + 1, quick)
    kd_cfg = copy.deepcopy(cfg)
    kd_cfg.method = "kd"
    modules = {
        "kd": DistillationModule(settings_of(kd_cfg), DistillationParts(copy.deepcopy(student), teacher)),
        "dskd": DistillationModule(settings_of(cfg), DistillationParts(student, teacher, senses, projection)),
    }
    medians, _ = interleaved_steps(modules, batches, cfg.optim.lr)
    kd, dskd = medians["kd"], medians["dskd"]
    shape = f"{cfg.data.batch_size}x{cfg.data.seq_len} tokens, {pairs} interleaved pairs"
    return [
        Figure(
            name="train/dskd_step_time",
            value=dskd,
            unit="s/step",
            baseline=kd,
            baseline_name="KD step time (same batches, same machine, interleaved)",
            goal="ratio <= 1.05",
            met=dskd / kd <= 1.05,
            note=f"tiny preset, online teacher, CPU, median; {shape}",
        )
    ]
