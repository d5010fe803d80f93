"""Lightning strategies for `trainer.strategy`: auto, ddp, fsdp, deepspeed_stage_2, deepspeed_stage_3.

Only the student (and the projection) belongs to the LightningModule; the teacher is held outside
it, so FSDP and DeepSpeed shard the student alone and the teacher stays whole on every device. The
names and precisions were checked when the config loaded (their ``Literal`` types in
:mod:`dskd.training.config`; combinations Lightning refuses in :mod:`dskd.config.rules`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dskd.core.errors import ConfigError
from dskd.training.config import TrainerConfig


def build_strategy(cfg: TrainerConfig, layer_cls: type[nn.Module], batch_size: int = 1) -> Any:
    """The Lightning strategy (object or name) for ``cfg.strategy``.

    ``layer_cls`` is the unit FSDP wraps; ``batch_size`` (sequences per device) is what DeepSpeed
    reports as its micro batch (it cannot read it from loaders that batch themselves).
    """
    name = cfg.strategy
    if name == "auto":
        return "auto"
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        # Frozen parameters never get gradients; DDP only tracks those that require them.
        return DDPStrategy(find_unused_parameters=False)
    if name == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        return FSDPStrategy(
            auto_wrap_policy={layer_cls},
            sharding_strategy="FULL_SHARD",
            use_orig_params=True,  # frozen and trainable parameters may share a flat parameter
            state_dict_type="full",  # one checkpoint file, exportable without the cluster
            limit_all_gathers=True,
        )
    try:  # deepspeed_stage_2 or deepspeed_stage_3
        import deepspeed  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"trainer.strategy={name} needs DeepSpeed: `DS_BUILD_OPS=0 pip install deepspeed` "
            "(or `pip install -e .[deepspeed]`)."
        ) from e
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return DeepSpeedStrategy(stage=int(name[-1]), logging_batch_size_per_gpu=batch_size)
