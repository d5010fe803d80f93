"""Cross-key rules: combinations of valid values that are known to fail, refused when a config loads.

Each rule reads the config sections it names and returns why it cannot work (with the fix), or None.
The single values were checked before (choices and ranges in :mod:`dskd.config.loading`); these catch
what only a pair or triple of keys gets wrong, so that it fails in a second instead of after the
teacher has loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dskd.config.schema import ExperimentConfig
from dskd.core.errors import ConfigError
from dskd.core.outputs import name_problem
from dskd.data.config import DataConfig
from dskd.losses.config import SAMPLED_DIVERGENCES, ULD_DIVERGENCES, LossConfig
from dskd.models.config import StudentConfig, TeacherConfig
from dskd.senses.config import SensesConfig
from dskd.teacher_cache.config import CacheConfig
from dskd.training.config import TrainerConfig

CUDA_ONLY_STRATEGIES = ("fsdp", "deepspeed_stage_2", "deepspeed_stage_3")
"""Strategies Lightning runs on CUDA GPUs only (it refuses FSDP and DeepSpeed on a CPU accelerator)."""
_DEVICES = re.compile(r"auto|-1|[1-9][0-9]*|\[\s*[0-9]+(\s*,\s*[0-9]+)*\s*,?\s*\]")
"""What trainer.devices may hold: auto, a count (-1: all), or a list of device indices like [0, 2]."""


def _devices_format(t: TrainerConfig) -> str | None:
    devices = str(t.devices).strip()
    if not _DEVICES.fullmatch(devices):
        return (
            f"trainer.devices={devices!r} is not auto, a device count (-1: all) or a list of device "
            "indices such as [0, 1]."
        )
    return None


def _sharded_strategy_on_cpu(t: TrainerConfig) -> str | None:
    if t.strategy in CUDA_ONLY_STRATEGIES and t.accelerator == "cpu":
        return (
            f"trainer.strategy={t.strategy} runs on CUDA GPUs only, but trainer.accelerator=cpu; use "
            "trainer.strategy=ddp (or auto) on CPUs, or trainer.accelerator=gpu."
        )
    return None


def _device_list_on_cpu(t: TrainerConfig) -> str | None:
    devices = str(t.devices).strip()
    if t.accelerator == "cpu" and (devices == "-1" or devices.startswith("[")):
        return (
            f"trainer.devices={devices} on trainer.accelerator=cpu: Lightning takes only a process count "
            "on the CPU (it refuses -1 and lists); set trainer.devices to a number such as 2, or auto."
        )
    return None


def _gpu_senses_on_cpu(method: str, senses: SensesConfig, t: TrainerConfig) -> str | None:
    if method == "dskd" and senses.device == "cuda" and t.accelerator == "cpu":
        return (
            "senses.device=cuda puts the sense dictionary on a GPU, but trainer.accelerator=cpu trains on "
            "the CPU; use senses.device=auto (or cpu)."
        )
    return None


def _nothing_to_train(method: str, s: StudentConfig) -> str | None:
    projection = method == "dskd" and s.projection == "linear"  # a learned map (the only one then)
    if s.kind == "truncated" and s.trainable_top_layers == 0 and not projection:
        return (
            "student.trainable_top_layers=0 leaves the truncated student without a trainable parameter "
            "(its embeddings, norm and LM head are frozen); train at least one layer."
        )
    return None


def _fp16_amp_on_cpu(t: TrainerConfig) -> str | None:
    if t.precision == "16-mixed" and t.accelerator == "cpu":
        return (
            "trainer.precision=16-mixed is not supported on trainer.accelerator=cpu (Lightning would "
            "silently switch to bf16-mixed); set trainer.precision=bf16-mixed or 32-true."
        )
    return None


def _skip_with_deepspeed(t: TrainerConfig) -> str | None:
    if t.nan_policy == "skip" and t.strategy.startswith("deepspeed"):
        return (
            f"trainer.nan_policy=skip does not work with trainer.strategy={t.strategy} (DeepSpeed cannot "
            "skip a step's backward); use trainer.nan_policy=stop, or strategy ddp or fsdp."
        )
    return None


def _chunked_kd_with_cache(teacher: TeacherConfig, loss: LossConfig) -> str | None:
    if teacher.mode == "cached" and loss.kd.chunk_size is not None:
        return (
            "loss.kd.chunk_size (chunked KD from the teacher's hidden states) does not combine with "
            "teacher.mode=cached (KD from the cache's targets); unset loss.kd.chunk_size."
        )
    return None


def _divergence_with_sampled_cache(
    teacher: TeacherConfig, cache: CacheConfig, loss: LossConfig
) -> str | None:
    kd = loss.kd
    if teacher.mode == "cached" and cache.kd_format == "sampled" and kd.divergence not in SAMPLED_DIVERGENCES:
        return (
            f"loss.kd.divergence={kd.divergence} cannot be estimated without bias from tokens sampled from "
            "the teacher (cache.kd_format=sampled estimates forward_kl only: the others need the "
            "teacher's probability of tokens it was not sampled on); use loss.kd.divergence=forward_kl, "
            "cache.kd_format=topk (a biased top-k approximation) or teacher.mode=online."
        )
    return None


def _cross_tokenizer_with_cache(teacher: TeacherConfig, loss: LossConfig) -> str | None:
    if teacher.mode == "cached" and loss.kd.divergence in ULD_DIVERGENCES:
        return (
            f"loss.kd.divergence={loss.kd.divergence} (cross-tokenizer KD) cannot read the teacher cache: it "
            "stores the teacher's top-k logits or samples at the positions of the student's tokenization, "
            "while ULD needs the teacher's whole distribution at every position of the teacher's own "
            "tokenization of the text, with its token ids and byte spans; use teacher.mode=online."
        )
    return None


def _cross_tokenizer_run(method: str, data: DataConfig, loss: LossConfig) -> str | None:
    """What the cross-tokenizer step (uld, uld_hybrid) does not do yet."""
    kd = loss.kd
    if kd.divergence not in ULD_DIVERGENCES:
        return None
    what = f"loss.kd.divergence={kd.divergence} (cross-tokenizer KD)"
    if method == "dskd" and data.sense_aligned_neighbours:
        return (
            f"{what} with method=dskd keys senses by words (dskd.data.words); "
            "data.sense_aligned_neighbours (gold synsets of the teacher's tokens) is not supported there."
        )
    if data.pack:
        return (
            f"{what} needs data.pack=false: each sequence is one document tokenized by both tokenizers "
            "and aligned on its bytes (packing several documents per sequence is not supported)."
        )
    if data.targets != "observed" or data.on_policy.fraction > 0:
        return (
            f"{what} trains on the observed text only (data.targets=observed, data.on_policy.fraction=0): "
            "teacher continuations and the student's own generations are in one tokenizer's ids."
        )
    if kd.chunk_size is not None:
        return f"{what} computes the span losses from full logits; unset loss.kd.chunk_size."
    return None


def _student_shape(s: StudentConfig) -> str | None:
    if s.tokenizer != "teacher" and s.kind != "scratch":
        return (
            f"student.tokenizer={s.tokenizer} is the vocabulary of a new model (student.kind=scratch); "
            f"student.kind={s.kind} has its own."
        )
    if s.kind == "scratch" and s.hidden_size % s.num_heads:
        return f"student.num_heads={s.num_heads} must divide student.hidden_size={s.hidden_size}."
    return None


def _chunked_kd_with_zero3_trainable_head(loss: LossConfig, t: TrainerConfig, s: StudentConfig) -> str | None:
    # kind=truncated freezes the LM head; kind=hf and scratch train every weight, the head included.
    if loss.kd.chunk_size is not None and t.strategy == "deepspeed_stage_3" and s.kind != "truncated":
        return (
            "loss.kd.chunk_size with trainer.strategy=deepspeed_stage_3 needs a frozen student LM head "
            "(the chunked loss reads the head's weight outside its forward), but "
            f"student.kind={s.kind} trains it; "
            "unset loss.kd.chunk_size or use student.kind=truncated."
        )
    return None


SHARDED_STUDENT_STRATEGIES = ("fsdp", "deepspeed_stage_3")
"""Strategies whose student's weights are gathered only inside its training forward (no on-policy)."""


def _on_policy_with_sharded_student(data: DataConfig, t: TrainerConfig) -> str | None:
    strategy = t.strategy
    if data.on_policy.fraction > 0 and strategy in SHARDED_STUDENT_STRATEGIES:
        return (
            f"data.on_policy.fraction > 0 does not work with trainer.strategy={strategy}: the student "
            "generates outside its training forward, where its sharded weights are not gathered; use "
            "trainer.strategy=ddp or deepspeed_stage_2, or data.on_policy.fraction=0."
        )
    return None


def _hf_student_without_model(s: StudentConfig) -> str | None:
    if s.kind == "hf" and not s.model:
        return "student.kind=hf needs student.model (asset name, folder or hub id)."
    return None


def _more_trainable_than_kept_layers(s: StudentConfig) -> str | None:
    if s.kind == "truncated" and s.trainable_top_layers > s.num_layers:
        return (
            f"student.trainable_top_layers={s.trainable_top_layers} exceeds student.num_layers="
            f"{s.num_layers}; train at most the layers the student keeps."
        )
    return None


def _source_keys_out_of_place(data: DataConfig, senses: SensesConfig) -> str | None:
    """Source keys that only one list reads, or that need another key of the same source."""
    lists = {"data.train": data.train, "data.val": data.val, "senses.sources": senses.sources}
    for name, sources in lists.items():
        for i, src in enumerate(sources):
            where = f"{name}[{i}] ({src.kind})"
            if src.subset_seed is not None and src.max_records is None:
                return (
                    f"{where} sets subset_seed but not max_records: the seed draws max_records records at "
                    "random; set max_records, or remove subset_seed to read every record."
                )
            if src.reservoir_cap is not None and name != "senses.sources":
                return f"{where} sets reservoir_cap, which only senses.sources read; remove it there."
            if src.teacher_new_tokens is not None and name == "senses.sources":
                return (
                    f"{where} sets teacher_new_tokens, which only data.train and data.val read (with "
                    "data.targets=teacher); remove it there."
                )
    return None


def _unsafe_name(name: str) -> str | None:
    """The run name becomes a folder and a SLURM job name: refused here, before any stage runs."""
    return name_problem(name, "The run name (name)")


RULES: tuple[tuple[Callable[..., str | None], tuple[str, ...]], ...] = (
    (_unsafe_name, ("name",)),
    (_devices_format, ("trainer",)),
    (_sharded_strategy_on_cpu, ("trainer",)),
    (_device_list_on_cpu, ("trainer",)),
    (_gpu_senses_on_cpu, ("method", "senses", "trainer")),
    (_nothing_to_train, ("method", "student")),
    (_fp16_amp_on_cpu, ("trainer",)),
    (_skip_with_deepspeed, ("trainer",)),
    (_chunked_kd_with_cache, ("teacher", "loss")),
    (_cross_tokenizer_with_cache, ("teacher", "loss")),
    (_cross_tokenizer_run, ("method", "data", "loss")),
    (_student_shape, ("student",)),
    (_divergence_with_sampled_cache, ("teacher", "cache", "loss")),
    (_chunked_kd_with_zero3_trainable_head, ("loss", "trainer", "student")),
    (_on_policy_with_sharded_student, ("data", "trainer")),
    (_hf_student_without_model, ("student",)),
    (_more_trainable_than_kept_layers, ("student",)),
    (_source_keys_out_of_place, ("data", "senses")),
)
"""Every cross-key rule with the config sections it reads (passed in this order), checked in this order
by :func:`check_rules`."""


def check_rules(cfg: ExperimentConfig, source: str = "config") -> None:
    """Raise :class:`ConfigError` for the first combination of keys in ``cfg`` that cannot work."""
    for rule, sections in RULES:
        problem = rule(*(getattr(cfg, name) for name in sections))
        if problem is not None:
            raise ConfigError(f"Config {source}: {problem}")
