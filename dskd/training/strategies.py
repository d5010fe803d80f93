"""Lightning strategies for `trainer.strategy`: auto, ddp, fsdp, deepspeed_stage_2, deepspeed_stage_3,
and what the training module must do differently under each (gradient norms, clipping, gathering).

Only the student (and the projection) belongs to the LightningModule; the teacher is held outside
it, so FSDP and DeepSpeed shard the student alone and the teacher stays whole on every device. A
student sharing the teacher's trunk holds some of the teacher's modules: FSDP leaves those out
(``ignored_modules``), so it shards only the student's trainable layers. The
names and precisions were checked when the config loaded (their ``Literal`` types in
:mod:`dskd.training.config`; combinations Lightning refuses in :mod:`dskd.config.rules`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, Strategy
from torch import nn

from dskd.core.errors import ConfigError
from dskd.training.config import TrainerConfig


def build_strategy(
    cfg: TrainerConfig, layer_cls: type[nn.Module], batch_size: int = 1, shared: Sequence[nn.Module] = ()
) -> Any:
    """The Lightning strategy (object or name) for ``cfg.strategy``.

    ``layer_cls`` is the unit FSDP wraps; ``batch_size`` (sequences per device) is what DeepSpeed
    reports as its micro batch (it cannot read it from loaders that batch themselves); ``shared``: the
    student's modules that are the teacher's own (a shared trunk), which FSDP leaves out.
    """
    name = cfg.strategy
    if name == "auto":
        return "auto"
    if name == "ddp":
        # Frozen parameters never get gradients; DDP only tracks those that require them.
        return DDPStrategy(find_unused_parameters=False)
    if name == "fsdp":
        return FSDPStrategy(
            auto_wrap_policy={layer_cls},
            sharding_strategy="FULL_SHARD",
            use_orig_params=True,  # frozen and trainable parameters may share a flat parameter
            state_dict_type="full",  # one checkpoint file, exportable without the cluster
            limit_all_gathers=True,
            # a shared trunk's modules stay whole, unflattened and unwrapped, where the teacher put them
            **({"ignored_modules": list(shared)} if shared else {}),
        )
    try:  # deepspeed_stage_2 or deepspeed_stage_3
        # deferred: DeepSpeed is an optional extra, needed by these two strategies only
        import deepspeed  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"trainer.strategy={name} needs DeepSpeed: `DS_BUILD_OPS=0 pip install deepspeed` "
            "(or `pip install -e .[deepspeed]`)."
        ) from e
    return DeepSpeedStrategy(stage=int(name[-1]), logging_batch_size_per_gpu=batch_size)


def gathered(module: nn.Module) -> contextlib.AbstractContextManager:
    """Gather a ZeRO-3 partitioned module's weights for reading outside its forward (else a no-op)."""
    if not any(hasattr(p, "ds_id") for p in module.parameters()):
        return contextlib.nullcontext()
    # deferred: DeepSpeed is an optional extra; a ds_id on a parameter means it is installed
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)


def gradient_norm(
    strategy: Strategy, cfg: TrainerConfig, grad_clip: float | None, parameters: Iterable[nn.Parameter]
) -> torch.Tensor | None:
    """The gradient norm before clipping, called before each optimizer step; under FSDP also clip
    here (Lightning cannot clip FSDP's sharded gradients). None under DeepSpeed, whose engine keeps
    the gradients to itself (:func:`deepspeed_gradient_norm` reads the norm it measured)."""
    if cfg.strategy == "fsdp":
        model = strategy.model  # the root FSDP module: the norm covers all shards
        return model.clip_grad_norm_(grad_clip if grad_clip else float("inf"))
    grads = [p.grad for p in parameters if p.requires_grad and p.grad is not None]
    if not grads:
        return None
    return torch.stack([g.detach().float().square().sum() for g in grads]).sum().sqrt()


def deepspeed_gradient_norm(strategy: Strategy) -> float | None:
    """The gradient norm DeepSpeed's engine measured in its optimizer step (None under the others)."""
    engine = getattr(strategy, "deepspeed_engine", None)
    norm = engine.get_global_grad_norm() if engine is not None else None
    return None if norm is None else float(norm)
