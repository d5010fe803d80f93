"""Benchmark: training the tiny DSKD preset from a teacher cache vs the online teacher.

Three copies of the preset's student train on the same batches of the DSKD data module (real
lexicon neighbours, the preset's sense dictionary), from the same weights and seed: one against the
online teacher (forward every step), one against a top-k cache (``cache.kd_format=topk``,
k = 1,024) and one against a sampled cache (``sampled``, 64 draws per position at tau), both written
in the same run with hidden states only where the sense loss can read them. Their AdamW steps
alternate (:func:`benchmarks.training.interleaved_steps`), so the step-time ratios are measured side
by side. The run is shortened to ``STEPS`` steps (the preset trains 200). At the end every student
is scored on held-out validation batches against the online teacher: the exact KL(p_T || p_S) at
temperature 1, the figure a cache must not worsen. The bytes per token of each layout are computed
from the stored arrays at paper scale (V = 128,256: the sampled ids take 3 bytes; d = 4,096 with the
fraction of positions the tiny preset's lexicon and dictionary need). The matmul peak of the machine
is measured in the same run; a step's achieved GFLOP/s is its FLOPs (:mod:`benchmarks.hardware`)
over its time.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Figure

PRESET = "experiments/tiny/dskd.yaml"
STEPS, QUICK_STEPS = 40, 3
VAL_BATCHES, QUICK_VAL_BATCHES = 8, 1
PAPER_VOCAB, PAPER_HIDDEN = 128_256, 4_096
MODES = {"topk": {"kd_format": "topk", "top_k": 1024}, "sampled": {"kd_format": "sampled"}}
"""The cache modes compared with the online teacher (the other keys: the config's defaults)."""


def _val_batches(cfg, tokenizer, n: int) -> list[dict]:
    import itertools

    from dskd.data.stream import META_KEYS
    from dskd.training.run import build_datamodule

    dm = build_datamodule(cfg.data, cfg.teacher, cfg.seed, tokenizer)
    dm.prepare_data()
    dm.setup("fit")
    return [
        {k: v for k, v in b.items() if k not in META_KEYS}
        for b in itertools.islice(iter(dm.val_dataloader()), n)
    ]


def heldout_kl(students: dict, teacher, batches: list[dict]) -> dict[str, float]:
    """Mean exact KL(p_T || p_S) at temperature 1 over the valid positions of ``batches``, per student."""
    import torch

    from dskd.losses.config import KDConfig
    from dskd.losses.kd import divergence_per_position, position_mask

    kd = KDConfig(tau=1.0)
    sums = dict.fromkeys(students, 0.0)
    n = 0.0
    with torch.inference_mode():
        for b in batches:
            ids, am = b["input_ids"], b["attention_mask"]
            mask = position_mask(b["labels"], am)
            t = teacher(input_ids=ids, attention_mask=am).logits
            n += float(mask.sum())
            for name, s in students.items():
                per = divergence_per_position(s(input_ids=ids, attention_mask=am).logits, t, kd=kd)
                sums[name] += float(per[mask].sum())
    return {name: v / max(n, 1.0) for name, v in sums.items()}


def _write_caches(root: Path, cfg, tokenizer, teacher, batches) -> tuple[dict, dict, dict]:
    """(config, meta, build seconds) of each cache mode, written under ``root``."""
    from dskd.core.io import read_json
    from dskd.testing.fixtures import write_batch_cache

    cfgs, metas, seconds = {}, {}, {}
    for mode, keys in MODES.items():
        cache = dataclasses.replace(cfg.cache, dir=str(root / mode), **keys)
        cfgs[mode] = dataclasses.replace(
            cfg, teacher=dataclasses.replace(cfg.teacher, mode="cached"), cache=cache
        )
        t0 = time.perf_counter()
        write_batch_cache(cache.dir, cfgs[mode], tokenizer, teacher, batches)
        seconds[mode] = time.perf_counter() - t0
        metas[mode] = read_json(root / mode / "meta.json")
    return cfgs, metas, seconds


def _vs_online(
    name: str, values: tuple[float, float], units: tuple[str, str], limit: float, note: str
) -> Figure:
    """A cached-run figure (``values``: cached, online) whose goal is ``cached <= limit x online``."""
    (cached, online), (unit, baseline_name) = values, units
    goal = f"ratio <= {limit}" + (" (>= 2x faster)" if limit == 0.5 else "")
    return Figure(name, cached, unit, online, baseline_name, goal, cached <= limit * online, note)


def bench_cached_training(quick: bool) -> list[Figure]:
    from benchmarks.hardware import DecoderShape, matmul_peak_gflops, training_step_flops
    from benchmarks.training import interleaved_steps, preset_setup
    from dskd.teacher_cache.build import open_cache
    from dskd.teacher_cache.store import bytes_per_position
    from dskd.training.module import DistillationModule, DistillationParts
    from tests.sections import settings_of, spec_of

    steps = QUICK_STEPS if quick else STEPS
    cfg, tokenizer, teacher, student, projection, senses, batches = preset_setup(steps + 1, quick, PRESET)
    val = _val_batches(cfg, tokenizer, QUICK_VAL_BATCHES if quick else VAL_BATCHES)
    with tempfile.TemporaryDirectory() as tmp:
        cfgs, metas, build_s = _write_caches(Path(tmp), cfg, tokenizer, teacher, batches)
        online = DistillationParts(copy.deepcopy(student), teacher, senses, projection)
        modules = {"online": DistillationModule(settings_of(cfg), online)}
        for mode, c in cfgs.items():
            cache = open_cache(spec_of(c), tokenizer)
            parts = DistillationParts(copy.deepcopy(student), None, senses, copy.deepcopy(projection), cache)
            modules[mode] = DistillationModule(settings_of(c), parts)
        medians, _ = interleaved_steps(modules, batches, cfg.optim.lr)
    kl = heldout_kl({name: m.student for name, m in modules.items()}, teacher, val)
    layout = {mode: bytes_per_position(meta, hidden_size=PAPER_HIDDEN) for mode, meta in metas.items()}
    fraction = metas["sampled"]["hidden_rows"] / (metas["sampled"]["rows"] * cfg.data.seq_len)
    setting = (
        f"tiny DSKD preset, CPU, {cfg.data.batch_size}x{cfg.data.seq_len} tokens, {steps} interleaved "
        f"AdamW steps (shortened from 200; lr {cfg.optim.lr}, no schedule), same seed, batches and weights"
    )
    figures = []
    for mode in MODES:
        hidden = layout[mode].get("hidden", 0.0) + layout[mode].get("hidden_index", 0.0)
        targets = sum(layout[mode].values()) - hidden
        figures += [
            Figure(
                name=f"cache/{mode} targets bytes per token",
                value=targets,
                unit="B/token",
                baseline=2.0 * PAPER_VOCAB,
                baseline_name="full bfloat16 logits at V = 128,256",
                goal="<= 300" if mode == "sampled" else None,
                met=targets <= 300 if mode == "sampled" else None,
                note=f"stored layout, V = {PAPER_VOCAB:,} (ids: {'3 B' if mode == 'sampled' else 'int32'})",
            ),
            _vs_online(
                f"train/cached_{mode}_dskd_step_time",
                (medians[mode], medians["online"]),
                ("s/step", "online-teacher DSKD step (same batches, interleaved)"),
                0.5,
                f"{setting}; cache of {len(batches)} batches written in {build_s[mode]:.1f} s",
            ),
            _vs_online(
                f"train/cached_{mode}_heldout_kl",
                (kl[mode], kl["online"]),
                ("nats/token", "online-teacher run, same steps"),
                1.02,
                f"exact KL(p_T || p_S) at tau 1 on {len(val)} held-out batches; {setting}",
            ),
        ]
    figures.append(
        Figure(
            name="cache/hidden bytes per token (positions sense, d = 4,096)",
            value=hidden,
            unit="B/token",
            baseline=2.0 * PAPER_HIDDEN,
            baseline_name="float16 hidden states at every position",
            goal=None,
            note=f"{fraction:.1%} of the tiny preset's positions have a target with senses or neighbours "
            "(+ 4 B/token of index)",
        )
    )
    peak = matmul_peak_gflops()
    shape_t, shape_s = DecoderShape.from_config(teacher.config), DecoderShape.from_config(student.config)
    for mode, t in (("online", medians["online"]), ("cached", medians["sampled"])):
        flops = training_step_flops(
            shape_t,
            shape_s,
            cfg.student.trainable_top_layers,
            cfg.data.batch_size,
            cfg.data.seq_len,
            teacher_forward=mode == "online",
        )
        figures.append(
            Figure(
                name=f"train/{mode}_step_matmul_efficiency",
                value=flops / t / 1e9,
                unit="GFLOP/s",
                baseline=peak,
                baseline_name="fp32 2048^3 matmul peak (same run)",
                goal="- (ratio = fraction of peak)",
                note=f"{flops / 1e9:.1f} GFLOP per step (formula in benchmarks/hardware.py)",
            )
        )
    return figures
