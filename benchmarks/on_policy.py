"""Benchmark: the training-step time of on-policy distillation at lambda = 0.5 relative to lambda = 0.

Two copies of the tiny DSKD preset's student train on the same batches of the DSKD data module
against one shared teacher, one with ``data.on_policy.fraction = 0.5`` (the preset's sampling keys:
temperature 1, top-p 1, up to 64 new tokens after half of each sequence) and one without; their AdamW
steps alternate (:func:`benchmarks.training.interleaved_steps`) and the figure is the ratio of the
*mean* step times (a lambda = 0.5 run mixes two kinds of steps, so the median would pick one of
them). A step includes drawing the batch, generating (on-policy batches only) and the sense sample
of the generated text. Short: ``STEPS`` timed steps each; which of them are on-policy is the seeded
draw of a real run with the preset's seed, reported with the figure.
"""

from __future__ import annotations

import copy
import statistics

from benchmarks.harness import Figure

PRESET = "experiments/tiny/dskd.yaml"
STEPS, QUICK_STEPS = 8, 2
FRACTION = 0.5


class _Steps:
    """A module whose ``losses`` first makes its ``index``-th batch on-policy when it is drawn so, as
    ``DistillationModule.training_step`` does (one process)."""

    def __init__(self, module, senses) -> None:
        self.module, self.senses = module, senses
        self.index = 0
        self.logs: list[dict[str, float]] = []

    def parameters(self):
        return self.module.parameters()

    def losses(self, batch):
        from dskd.training.on_policy import BatchKey, training_batch

        m = self.module
        key = BatchKey(m.settings.seed, self.index, 0)
        batch, logs = training_batch(m.student, batch, m.settings.on_policy, key, senses=self.senses)
        self.index += 1
        self.logs.append(logs)
        return m.losses(batch, on_policy=bool(logs.get("train/on_policy")))


def bench_on_policy_step_time(quick: bool) -> list[Figure]:
    from benchmarks.training import interleaved_steps, preset_setup
    from dskd.training.module import DistillationModule, DistillationParts
    from dskd.training.run import build_datamodule
    from tests.sections import settings_of

    steps = QUICK_STEPS if quick else STEPS
    over = (f"data.on_policy.fraction={FRACTION}",)  # online teacher: no cache holds generated text
    setup = preset_setup(steps + 1, quick, PRESET, over)
    cfg, tokenizer, teacher, student, projection, senses, batches = setup
    lexicon_dir = cfg.lexicon.output_dir if cfg.method == "dskd" else None
    dm = build_datamodule(cfg.data, cfg.teacher, cfg.seed, tokenizer, lexicon_dir, senses)
    dm.setup("fit")
    off = copy.deepcopy(cfg)
    off.data.on_policy.fraction = 0.0
    runs = {
        "lambda=0": _Steps(
            DistillationModule(
                settings_of(off),
                DistillationParts(copy.deepcopy(student), teacher, senses, copy.deepcopy(projection)),
            ),
            None,
        ),
        "lambda=0.5": _Steps(
            DistillationModule(settings_of(cfg), DistillationParts(student, teacher, senses, projection)),
            dm.on_policy_senses,
        ),
    }
    means, _ = interleaved_steps(runs, batches, cfg.optim.lr, reduce=statistics.fmean)
    timed = runs["lambda=0.5"].logs[1:]  # the first batch warms up and is not timed
    on = [log for log in timed if log["train/on_policy"]]
    tokens = sum(log["train/gen_tokens"] for log in on)
    seconds = sum(log["train/gen_time_s"] for log in on)
    op = cfg.data.on_policy
    shape = (
        f"{cfg.data.batch_size}x{cfg.data.seq_len} tokens, {steps} interleaved pairs of which {len(on)} "
        f"on-policy; up to {op.max_new_tokens} new tokens after {op.prefix_fraction:g} of each sequence"
    )
    figures = [
        Figure(
            name="train/on_policy_0.5_step_time",
            value=means["lambda=0.5"],
            unit="s/step",
            baseline=means["lambda=0"],
            baseline_name="lambda = 0 step time (same batches, same machine, interleaved)",
            note=f"tiny preset, CPU, mean; {shape}",
        )
    ]
    if on:
        figures.append(
            Figure(
                name="train/on_policy_gen_tokens_per_s",
                value=tokens / seconds,
                unit="tokens/s",
                note=f"student generation, batched with KV cache; {tokens:.0f} tokens in {seconds:.2f} s",
            )
        )
    return figures
