"""How far cached top-k KD lands from online KD: two short runs of the tiny KD preset, then an exact check.

``python -m benchmarks.kd_compare --steps 100 --out DIR`` (stages: build, online, cached, eval;
default all): builds the teacher cache of the run, trains the preset with ``teacher.mode=online``
and ``teacher.mode=cached`` (same seed, same batches), then scores both final students with the
online teacher on the validation batches (exact CE, exact KD, top-k KD, top-1 agreement) and, on
the first training batches, compares the exact KD with its top-k approximation for the cached
student. Writes ``DIR/compare.json``. Minutes of CPU time: not part of ``make bench``. The cache is
built with ``cache.kd_format=topk`` (the sampled mode is measured by :mod:`benchmarks.teacher_cache`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

PRESET = "experiments/tiny/kd.yaml"
SWEEP = (64, 256, 1024, 4096, 16384, 49152)
"""k of the top-k KD approximation compared with exact KD on the first training batches."""


def _config(out: Path, steps: int, val_batches: int, mode: str = "online"):
    from dskd.config.loading import load_config

    return load_config(
        PRESET,
        [
            f"trainer.max_steps={steps}",
            f"trainer.limit_val_batches={val_batches}",
            "trainer.checkpoint_every_n_steps=100000",
            "logging.wandb=false",
            f"runs_dir={out / 'runs'}",
            f"cache.dir={out / 'cache'}",
            f"teacher.mode={mode}",
            "cache.kd_format=topk",  # this study measures the top-k approximation
            f"name=tiny-kd-{mode}",
        ],
    )


def _score(cfg, student_dir: Path, batches, teacher, cache, sweep=()) -> dict[str, float]:
    """Per-position means over ``batches``: CE, exact KD, top-k KD from the cache and, for each k in
    ``sweep``, from the teacher's exact top-k; top-1 agreement with the teacher."""
    import torch
    import torch.nn.functional as F

    from dskd.core.batch import IGNORE_INDEX
    from dskd.losses.kd import kd_loss, position_mask
    from dskd.losses.topk import teacher_topk, topk_kd_loss
    from dskd.models.loading import load_causal_lm

    student = load_causal_lm(student_dir, dtype="float32")
    k = cfg.loss.kd
    sums: dict[str, float] = {}
    with torch.inference_mode():
        for b in batches:
            mask = position_mask(b["labels"], b["attention_mask"])
            s = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            t = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            n = float(mask.sum())
            labels = b["labels"].masked_fill(~mask, IGNORE_INDEX)
            ce = F.cross_entropy(s.flatten(0, 1), labels.flatten(), reduction="sum")  # ignores IGNORE_INDEX
            topk = {"cache": cache.lookup(b["input_ids"], b["attention_mask"]).targets}
            topk |= {str(kk): teacher_topk(t, kk, k.tau) for kk in sweep if kk <= t.shape[-1]}
            values = {
                "ce": float(ce),
                "kd_exact": n * float(kd_loss(s, t, mask, kd=k)),
                **{f"kd_top{name}": n * float(topk_kd_loss(s, tk, mask, kd=k)) for name, tk in topk.items()},
                "agree": float(((s.argmax(-1) == t.argmax(-1)) & mask).sum()),
                "n": n,
            }
            sums = {key: sums.get(key, 0.0) + v for key, v in values.items()}
    n = max(sums.pop("n"), 1.0)
    return {key: v / n for key, v in sums.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--val-batches", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("results/teacher_cache"))
    p.add_argument("--stage", choices=("all", "build", "online", "cached", "eval"), default="all")
    a = p.parse_args(argv)
    cfg = _config(a.out, a.steps, a.val_batches)
    stages = ("build", "online", "cached", "eval") if a.stage == "all" else (a.stage,)
    if "build" in stages:
        from dskd.teacher_cache.build import build

        print(json.dumps(build(cfg, hidden_dtype="none").stats, indent=2))
    for mode in ("online", "cached"):
        if mode in stages:
            from dskd.training.run import train

            print(json.dumps(train(_config(a.out, a.steps, a.val_batches, mode)), indent=2))
    if "eval" in stages:
        from dskd.models.loading import load_causal_lm, load_tokenizer
        from dskd.teacher_cache.build import open_cache, run_batches
        from dskd.training.run import run_dir
        from tests.sections import spec_of

        tok = load_tokenizer(cfg.teacher.model)
        teacher = load_causal_lm(cfg.teacher.model, dtype="float32")
        cache = open_cache(spec_of(cfg), tok)
        val_cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, max_steps=10))
        batches = list(run_batches(spec_of(val_cfg), tok, [cfg.seed]))
        val, train_batches = batches[: a.val_batches], batches[a.val_batches :]
        result: dict = {"steps": a.steps, "top_k": cfg.cache.top_k, "tau": cfg.loss.kd.tau}
        for mode in ("online", "cached"):
            run_cfg = _config(a.out, a.steps, a.val_batches, mode)
            run = run_dir(run_cfg.runs_dir, run_cfg.name, run_cfg.seed)
            summary = json.loads((run / "summary.json").read_text())
            result[mode] = {
                "wall_time_s": summary["wall_time_s"],
                "val_exact": _score(cfg, run / "export", val, teacher, cache),
                "first_train_batches": _score(cfg, run / "export", train_batches[:4], teacher, cache, SWEEP),
            }
        (a.out / "compare.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
