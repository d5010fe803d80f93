"""`dskd reproduce --rehearse`: a preset as written, end to end on a CPU with two processes.

Only what a CPU machine without the hub cannot have is replaced, and the list is printed at the
start: (a) the teacher by a random model of its architecture family with a small offline tokenizer
(chat template included), (b) each hub data set by a small offline stand-in of the same fields
(``DSKD_HUB_MIRROR``, docs/data.md), (c) the accelerator by the CPU with 2 DDP processes (DDP stands
in for FSDP / DeepSpeed, which Lightning runs on GPUs only). Outputs go under
``artifacts/rehearse/<preset>/``; each step's learning rate and each rank's example ids are logged
(``trainer.log_every_n_steps=1``, ``logging.example_ids``), and one training batch is on-policy
(``data.on_policy.fraction`` just above that batch's draw). Everything else runs as the preset says:
epochs, warm-up and schedule, teacher continuations, packing choice, chunked KD, sense dictionary, export,
evaluation and table. Overrides given on the command line come after these and win (a GPU rehearsal:
``trainer.accelerator=gpu trainer.strategy=fsdp``, see scripts/gpu_check.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dskd.config.rules import CUDA_ONLY_STRATEGIES, SHARDED_STUDENT_STRATEGIES
from dskd.core.stamps import run_stage, stage_key
from dskd.corpora.sources import HUB_MIRROR
from dskd.testing.standins import hub_datasets, standin_tokenizer, write_hub_mirror, write_standin_teacher
from dskd.training.on_policy import fraction_for_one

TRAIN_RECORDS = 12
"""Stand-in records of a train split (per data set): 60 training prompts for the 5 paper sources."""
HELD_OUT_RECORDS = 6
"""Stand-in records of any other split (the evaluation's shot and test splits)."""
REHEARSAL_WORLD = 2
"""DDP processes of a rehearsal."""
STANDIN_EXTRA_LAYERS = 2
"""The stand-in teacher has this many layers more than the student keeps (a truncated student)."""


def rehearsal_root(preset: str) -> Path:
    return Path("artifacts/rehearse") / Path(preset.rstrip("/")).name


def _accelerator(cfg: Any) -> list[tuple[str, str]]:
    t = cfg.trainer
    out = [
        ("trainer.accelerator=cpu", "CPU instead of the GPUs"),
        (f"trainer.devices={REHEARSAL_WORLD}", f"{REHEARSAL_WORLD} processes"),
    ]
    out.append(("trainer.num_nodes=1", "one node"))
    if t.strategy in CUDA_ONLY_STRATEGIES:
        out.append(("trainer.strategy=ddp", f"DDP stands in for {t.strategy} (GPU only)"))
    if t.precision == "16-mixed":
        out.append(("trainer.precision=bf16-mixed", "fp16 autocast does not exist on CPU"))
    if cfg.senses.device not in ("auto", "cpu"):
        out.append(("senses.device=auto", f"senses.device={cfg.senses.device} needs a GPU"))
    return out


def rehearsal_overrides(preset: str, configs: list[Any], given: list[str] = ()) -> list[str]:
    """Write the stand-ins of ``configs`` (the preset as written, with the command line's overrides
    ``given``), point ``DSKD_HUB_MIRROR`` at the data stand-ins, print what the rehearsal replaces and
    return the overrides that do it (none of a key that ``given`` sets: those win)."""
    root = rehearsal_root(preset)
    first = configs[0]
    reads = _hub_reads(configs)
    teacher = root / "standin-teacher"
    mirror = root / "hub"
    key = stage_key(sorted(reads, key=str), first.teacher.model, TRAIN_RECORDS, HELD_OUT_RECORDS)
    layers = max(c.student.num_layers for c in configs) + STANDIN_EXTRA_LAYERS
    key = stage_key(key, layers)
    run_stage(
        "rehearsal stand-ins", root, key, lambda: _write_standins(root, reads, first.teacher.model, layers)
    )
    os.environ[HUB_MIRROR] = str(mirror.resolve())
    outputs = [
        f"artifacts_dir={root}/artifacts",
        f"runs_dir={root}/runs",
        f"eval.output_dir={root}/results",
        f"lexicon.output_dir={root}/artifacts/lexicon",
        f"senses.output_dir={root}/artifacts/senses",
        f"data.continuations_dir={root}/artifacts/teacher_continuations",
        f"cache.dir={root}/artifacts/teacher_cache",
    ]
    changes = [
        (f"teacher.model={teacher}", f"a random {_family(first.teacher.model)} for {first.teacher.model}"),
        *_accelerator(first),
        ("trainer.log_every_n_steps=1", "every step's lr in metrics.csv"),
        ("logging.example_ids=true", "each rank's example ids in <run>/examples/"),
    ]
    keys = {o.partition("=")[0] for o in given}
    changes = [(o, why) for o, why in changes if o.partition("=")[0] not in keys]
    strategy = "ddp" if any(o.startswith("trainer.strategy=") for o, _ in changes) else first.trainer.strategy
    sharded = strategy in SHARDED_STUDENT_STRATEGIES
    if "data.on_policy.fraction" not in keys and not sharded:
        changes.append(_one_on_policy_batch(first))
    lines = [f"=== rehearsal of {preset}: the preset as written, except"]
    lines += [f"  {o:<44} {why}" for o, why in changes]
    if sharded:
        lines.append(f"  no on-policy batch: trainer.strategy={strategy} cannot generate (docs/training.md)")
    lines += [f"  {o:<44} from the command line" for o in given]
    lines.append(f"  hub data sets -> offline stand-ins          {HUB_MIRROR}={mirror}")
    lines += [f"    {d}{'/' + s if s else ''} ({split})" for d, s, split in sorted(reads, key=str)]
    lines.append(f"  outputs under {root}/")
    print("\n".join(lines), flush=True)
    return [*(o for o, _ in changes), *outputs]


def _one_on_policy_batch(cfg: Any) -> tuple[str, str]:
    """The override that makes one training batch of the run on-policy (the presets keep fraction 0):
    the path of docs/training.md, "On-policy distillation", runs on 2 processes. The batch is the
    one of the smallest draw among the run's batches per process at most: ``max_steps`` times the
    accumulation, or per epoch the stand-in prompts (one sequence each at most) over the processes."""
    t = cfg.trainer
    if t.max_steps > 0:
        n = t.max_steps * t.accumulate_grad_batches
    else:
        n = t.max_epochs * -(-TRAIN_RECORDS * len(cfg.data.train) // (REHEARSAL_WORLD * cfg.data.batch_size))
    fraction, index = fraction_for_one(cfg.seed, n)
    return f"data.on_policy.fraction={fraction!r}", f"one on-policy batch (#{index} of <= {n} per process)"


def _hub_reads(configs: list[Any]) -> set[tuple[str, str | None, str]]:
    return hub_datasets(configs)


def _family(teacher_id: str) -> str:
    return "Mistral" if "mistral" in teacher_id.lower() else "Llama"


def _write_standins(root: Path, reads: set, teacher_id: str, layers: int) -> dict[str, str]:
    mirror = write_hub_mirror(root / "hub", reads, TRAIN_RECORDS, HELD_OUT_RECORDS)
    teacher = write_standin_teacher(
        root / "standin-teacher", teacher_id, standin_tokenizer(mirror), layers=layers
    )
    return {"hub": str(mirror), "teacher": str(teacher)}
