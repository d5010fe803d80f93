"""Cross-key rules: combinations of valid values that are known to fail, refused when a config loads.

Each rule reads a typed config and returns why it cannot work (with the fix), or None. The single
values were checked before (choices and ranges in :mod:`dskd.config.loading`); these catch what only a pair
or triple of keys gets wrong, so that it fails in a second instead of after the teacher has loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dskd.config.schema import ExperimentConfig
from dskd.core.errors import ConfigError

CUDA_ONLY_STRATEGIES = ("fsdp", "deepspeed_stage_2", "deepspeed_stage_3")
"""Strategies Lightning runs on CUDA GPUs only (it refuses FSDP and DeepSpeed on a CPU accelerator)."""
_DEVICES = re.compile(r"auto|-1|[1-9][0-9]*|\[\s*[0-9]+(\s*,\s*[0-9]+)*\s*,?\s*\]")
"""What trainer.devices may hold: auto, a count (-1: all), or a list of device indices like [0, 2]."""


def _devices_format(cfg: ExperimentConfig) -> str | None:
    devices = str(cfg.trainer.devices).strip()
    if not _DEVICES.fullmatch(devices):
        return (
            f"trainer.devices={devices!r} is not auto, a device count (-1: all) or a list of device "
            "indices such as [0, 1]."
        )
    return None


def _sharded_strategy_on_cpu(cfg: ExperimentConfig) -> str | None:
    t = cfg.trainer
    if t.strategy in CUDA_ONLY_STRATEGIES and t.accelerator == "cpu":
        return (
            f"trainer.strategy={t.strategy} runs on CUDA GPUs only, but trainer.accelerator=cpu; use "
            "trainer.strategy=ddp (or auto) on CPUs, or trainer.accelerator=gpu."
        )
    return None


def _device_list_on_cpu(cfg: ExperimentConfig) -> str | None:
    t = cfg.trainer
    devices = str(t.devices).strip()
    if t.accelerator == "cpu" and (devices == "-1" or devices.startswith("[")):
        return (
            f"trainer.devices={devices} on trainer.accelerator=cpu: Lightning takes only a process count "
            "on the CPU (it refuses -1 and lists); set trainer.devices to a number such as 2, or auto."
        )
    return None


def _gpu_senses_on_cpu(cfg: ExperimentConfig) -> str | None:
    if cfg.method == "dskd" and cfg.senses.device == "cuda" and cfg.trainer.accelerator == "cpu":
        return (
            "senses.device=cuda puts the sense dictionary on a GPU, but trainer.accelerator=cpu trains on "
            "the CPU; use senses.device=auto (or cpu)."
        )
    return None


def _nothing_to_train(cfg: ExperimentConfig) -> str | None:
    s = cfg.student
    projection = cfg.method == "dskd" and s.projection == "linear"  # a learned map (the only one then)
    if s.kind == "truncated" and s.trainable_top_layers == 0 and not projection:
        return (
            "student.trainable_top_layers=0 leaves the truncated student without a trainable parameter "
            "(its embeddings, norm and LM head are frozen); train at least one layer."
        )
    return None


def _fp16_amp_on_cpu(cfg: ExperimentConfig) -> str | None:
    t = cfg.trainer
    if t.precision == "16-mixed" and t.accelerator == "cpu":
        return (
            "trainer.precision=16-mixed is not supported on trainer.accelerator=cpu (Lightning would "
            "silently switch to bf16-mixed); set trainer.precision=bf16-mixed or 32-true."
        )
    return None


def _skip_with_deepspeed(cfg: ExperimentConfig) -> str | None:
    t = cfg.trainer
    if t.nan_policy == "skip" and t.strategy.startswith("deepspeed"):
        return (
            f"trainer.nan_policy=skip does not work with trainer.strategy={t.strategy} (DeepSpeed cannot "
            "skip a step's backward); use trainer.nan_policy=stop, or strategy ddp or fsdp."
        )
    return None


def _chunked_kd_with_cache(cfg: ExperimentConfig) -> str | None:
    if cfg.teacher.mode == "cached" and cfg.loss.kd.chunk_size is not None:
        return (
            "loss.kd.chunk_size (chunked KD from the teacher's hidden states) does not combine with "
            "teacher.mode=cached (KD from the cache's targets); unset loss.kd.chunk_size."
        )
    return None


def _divergence_with_sampled_cache(cfg: ExperimentConfig) -> str | None:
    from dskd.losses.config import SAMPLED_DIVERGENCES

    kd = cfg.loss.kd
    if (
        cfg.teacher.mode == "cached"
        and cfg.cache.kd_format == "sampled"
        and kd.divergence not in SAMPLED_DIVERGENCES
    ):
        return (
            f"loss.kd.divergence={kd.divergence} cannot be estimated without bias from tokens sampled from "
            "the teacher (cache.kd_format=sampled estimates forward_kl only: the others need the "
            "teacher's probability of tokens it was not sampled on); use loss.kd.divergence=forward_kl, "
            "cache.kd_format=topk (a biased top-k approximation) or teacher.mode=online."
        )
    return None


def _chunked_kd_with_zero3_trainable_head(cfg: ExperimentConfig) -> str | None:
    # kind=truncated freezes the LM head; kind=hf trains every weight, the head included.
    if (
        cfg.loss.kd.chunk_size is not None
        and cfg.trainer.strategy == "deepspeed_stage_3"
        and cfg.student.kind == "hf"
    ):
        return (
            "loss.kd.chunk_size with trainer.strategy=deepspeed_stage_3 needs a frozen student LM head (the "
            "chunked loss reads the head's weight outside its forward), but student.kind=hf trains it; "
            "unset loss.kd.chunk_size or use student.kind=truncated."
        )
    return None


SHARDED_STUDENT_STRATEGIES = ("fsdp", "deepspeed_stage_3")
"""Strategies whose student's weights are gathered only inside its training forward (no on-policy)."""


def _on_policy_with_sharded_student(cfg: ExperimentConfig) -> str | None:
    strategy = cfg.trainer.strategy
    if cfg.data.on_policy.fraction > 0 and strategy in SHARDED_STUDENT_STRATEGIES:
        return (
            f"data.on_policy.fraction > 0 does not work with trainer.strategy={strategy}: the student "
            "generates outside its training forward, where its sharded weights are not gathered; use "
            "trainer.strategy=ddp or deepspeed_stage_2, or data.on_policy.fraction=0."
        )
    return None


def _hf_student_without_model(cfg: ExperimentConfig) -> str | None:
    if cfg.student.kind == "hf" and not cfg.student.model:
        return "student.kind=hf needs student.model (asset name, folder or hub id)."
    return None


def _more_trainable_than_kept_layers(cfg: ExperimentConfig) -> str | None:
    s = cfg.student
    if s.kind == "truncated" and s.trainable_top_layers > s.num_layers:
        return (
            f"student.trainable_top_layers={s.trainable_top_layers} exceeds student.num_layers="
            f"{s.num_layers}; train at most the layers the student keeps."
        )
    return None


def _source_keys_out_of_place(cfg: ExperimentConfig) -> str | None:
    """Source keys that only one list reads, or that need another key of the same source."""
    lists = {"data.train": cfg.data.train, "data.val": cfg.data.val, "senses.sources": cfg.senses.sources}
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


RULES: tuple[Callable[[ExperimentConfig], str | None], ...] = (
    _devices_format,
    _sharded_strategy_on_cpu,
    _device_list_on_cpu,
    _gpu_senses_on_cpu,
    _nothing_to_train,
    _fp16_amp_on_cpu,
    _skip_with_deepspeed,
    _chunked_kd_with_cache,
    _divergence_with_sampled_cache,
    _chunked_kd_with_zero3_trainable_head,
    _on_policy_with_sharded_student,
    _hf_student_without_model,
    _more_trainable_than_kept_layers,
    _source_keys_out_of_place,
)
"""Every cross-key rule, checked in this order by :func:`check_rules`."""


def check_rules(cfg: ExperimentConfig, source: str = "config") -> None:
    """Raise :class:`ConfigError` for the first combination of keys in ``cfg`` that cannot work."""
    for rule in RULES:
        problem = rule(cfg)
        if problem is not None:
            raise ConfigError(f"Config {source}: {problem}")
