"""The section bundles a test builds from a whole experiment config, as `train` and the cache stage
build them (the library's components take the bundles, only the stage entry points the config)."""

from __future__ import annotations

from dskd.config.schema import ExperimentConfig
from dskd.teacher_cache.build import CacheSpec
from dskd.training.module import DistillationSettings
from dskd.training.run import ModelSpec


def settings_of(cfg: ExperimentConfig) -> DistillationSettings:
    """The sections of ``cfg`` the training module reads, as :func:`dskd.training.run.train` passes them."""
    return DistillationSettings(
        cfg.method,
        cfg.loss,
        cfg.optim,
        cfg.trainer,
        cfg.teacher,
        cfg.data.on_policy,
        cfg.seed,
        cfg.to_yaml(),
        cfg.data.seq_len,
    )


def spec_of(cfg: ExperimentConfig) -> CacheSpec:
    """The sections of ``cfg`` its teacher cache depends on, as the cache stage takes them."""
    dirs = (cfg.lexicon.output_dir, cfg.senses.output_dir) if cfg.method == "dskd" else None
    return CacheSpec(cfg.teacher, cfg.cache, cfg.data, cfg.loss.kd, cfg.trainer, cfg.seed, dirs)


def models_of(cfg: ExperimentConfig) -> ModelSpec:
    """The sections of ``cfg`` :func:`dskd.training.run.load_models` reads, as ``train`` passes them."""
    return ModelSpec(
        cfg.teacher, cfg.student, cfg.trainer, cfg.data.on_policy, cfg.method, cfg.loss.kd.divergence
    )
