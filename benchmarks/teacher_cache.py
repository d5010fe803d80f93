"""Benchmark: cached-teacher vs online DSKD training step on the tiny preset, and the FLOP efficiency.

Two copies of the preset's student train on the same batches of the DSKD data module (real lexicon
neighbours, the preset's sense dictionary): one against the online teacher (forward every step), one
against a teacher cache of those batches written in the same run (no teacher forward). Their steps
(losses, backward, optimizer step) alternate; the first pair warms up and is also where both
students are still identical, so its KD and sense values compare the cache with the online teacher
exactly (top-k KD approximation, float16 hidden states). The matmul peak of the machine is measured
in the same run; a step's achieved GFLOP/s is its FLOPs (:mod:`benchmarks.hardware`) over its time.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time

from benchmarks.harness import Figure

PRESET = "experiments/tiny/dskd.yaml"


def bench_cached_training(quick: bool) -> list[Figure]:

    from benchmarks.hardware import DecoderShape, matmul_peak_gflops, training_step_flops
    from benchmarks.training import interleaved_steps, preset_setup
    from dskd.teacher_cache.build import open_cache
    from dskd.testing import write_batch_cache
    from dskd.training.module import DistillationModule

    pairs = 1 if quick else 6
    cfg, tokenizer, teacher, student, projection, senses, batches = preset_setup(pairs + 1, PRESET)
    with tempfile.TemporaryDirectory() as tmp:
        cached_cfg = dataclasses.replace(
            cfg, teacher=dataclasses.replace(cfg.teacher, mode="cached", cache_dir=tmp)
        )
        t0 = time.perf_counter()
        write_batch_cache(tmp, cached_cfg, tokenizer, teacher, batches)
        build_s = time.perf_counter() - t0
        modules = {
            "online": DistillationModule(cfg, student, teacher, senses, projection),
            "cached": DistillationModule(
                cached_cfg,
                copy.deepcopy(student),
                None,
                senses,
                copy.deepcopy(projection),
                cached=open_cache(cached_cfg, tokenizer),
            ),
        }
        medians, first = interleaved_steps(modules, batches, cfg.optim.lr)
    online, cached = medians["online"], medians["cached"]
    peak = matmul_peak_gflops()
    shape_t = DecoderShape.from_config(teacher.config)
    shape_s = DecoderShape.from_config(student.config)
    flops = {
        mode: training_step_flops(
            shape_t,
            shape_s,
            cfg.student.trainable_top_layers,
            cfg.data.batch_size,
            cfg.data.seq_len,
            teacher_forward=mode == "online",
        )
        for mode in ("online", "cached")
    }
    setting = f"tiny preset, CPU, {cfg.data.batch_size}x{cfg.data.seq_len} tokens, {pairs} pairs"
    figures = [
        Figure(
            name="train/cached_dskd_step_time",
            value=cached,
            unit="s/step",
            baseline=online,
            baseline_name="online-teacher DSKD step (same batches, interleaved)",
            goal="ratio <= 0.5 (>= 2x faster)",
            met=cached <= 0.5 * online,
            note=f"{setting}; cache of {len(batches)} batches written in {build_s:.1f} s",
        ),
        Figure(
            name=f"kd/top-{cfg.teacher.cache_top_k} KD (cached) vs exact KD",
            value=first["cached"]["kd"],
            unit="loss",
            baseline=first["online"]["kd"],
            baseline_name="exact KD, online teacher, same batch and student",
            goal="ratio -> 1 as k grows (lower bound)",
            note=f"sense (fp16 hidden) {first['cached']['sense']:.6g} vs online "
            f"{first['online']['sense']:.6g}; CE {first['cached']['ce']:.6g} vs {first['online']['ce']:.6g}",
        ),
    ]
    for mode, t in (("online", online), ("cached", cached)):
        figures.append(
            Figure(
                name=f"train/{mode}_step_matmul_efficiency",
                value=flops[mode] / t / 1e9,
                unit="GFLOP/s",
                baseline=peak,
                baseline_name="fp32 2048^3 matmul peak (same run)",
                goal="- (ratio = fraction of peak)",
                note=f"{flops[mode] / 1e9:.1f} GFLOP per step (formula in benchmarks/hardware.py)",
            )
        )
    return figures
