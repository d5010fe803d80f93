"""A 2-process DDP run on CPU (gloo), launched by test_ddp.py: `python ddp_script.py TMP
TEACHER_DIR [on-policy] [copies] [fsdp [full]] [six] [still] [corpus]` (on-policy: method kd with
every batch on-policy, each rank generating for its own; copies: student.share_trunk=false, the
student holds copies of the teacher's frozen modules; fsdp: trainer.strategy=fsdp, the strategy the
run builds, on the CPU (see :class:`CPUFSDP`), exported at the end; full:
trainer.checkpoint_weights=full; six: 6 steps, not 4; still: optim.lr=1e-12, so that runs of
different lengths (cosine over trainer.max_steps) keep the same weights and equal losses mean equal
batches; corpus: the real DSKDDataModule over a text corpus of 4 batches per rank and epoch, in
place of 8 random batches dealt round-robin).

Lightning starts the second process by running this script again; each process writes its trainable
weights (so the test can check that gradient averaging kept them identical) and the input ids of
every batch it trained on (so the test can check that the processes saw different data).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.strategies import FSDPStrategy  # noqa: E402
from lightning.pytorch.strategies import fsdp as lightning_fsdp  # noqa: E402
from tinyrun import (  # noqa: E402
    corpus_config,
    make_senses,
    random_batches,
    real_datamodule,
    tiny_config,
    write_corpus,
)
from torch.distributed.fsdp import FullyShardedDataParallel  # noqa: E402

from dskd.training import run  # noqa: E402


class CPUFSDP(FSDPStrategy):
    """The run's own FSDPStrategy (its kwargs as built), on the CPU: Lightning refuses an FSDPStrategy
    on a CPU accelerator (by its exact type, so not a subclass), and torch's FSDP runs on gloo when
    its ``device_id`` names the CPU (Lightning passes the device's index, None on a CPU)."""

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            return super()._setup_model(model)  # wrapped in fit, validated after: Lightning's own path
        return FullyShardedDataParallel(
            module=model,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            **self.kwargs,
        )


def _cpu_state_dict_context(module: torch.nn.Module, world_size: int, rank0_only: bool = True):
    """Lightning's full state dict context without ``offload_to_cpu``: on a CPU the offload is no copy,
    and FSDP frees the storage the state dict then clones from (a segfault)."""
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType

    return FullyShardedDataParallel.state_dict_type(
        module,
        StateDictType.FULL_STATE_DICT,
        FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
        FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
    )


def cpu_fsdp(*args, **kwargs):
    strategy = build_strategy(*args, **kwargs)
    assert type(strategy) is FSDPStrategy
    strategy.__class__ = CPUFSDP
    return strategy


build_strategy = run.build_strategy


class WriteWeightsAndBatches(pl.Callback):
    def __init__(self) -> None:
        self.input_ids: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.input_ids.append(batch["input_ids"].clone())

    def on_train_start(self, trainer, pl_module) -> None:
        (Path(sys.argv[1]) / f"shared-rank{trainer.global_rank}").write_text(str(pl_module.trunk is not None))

    def on_train_end(self, trainer, pl_module) -> None:
        flat = torch.cat([p.detach().flatten() for p in pl_module.parameters() if p.requires_grad])
        torch.save(flat, Path(sys.argv[1]) / f"weights-rank{trainer.global_rank}.pt")
        torch.save(self.input_ids, Path(sys.argv[1]) / f"batches-rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    tmp, teacher = Path(sys.argv[1]), Path(sys.argv[2])
    if not (tmp / "senses").exists():
        make_senses(tmp / "senses", teacher)
    flags = sys.argv[3:]
    steps = 6 if "six" in flags else 4
    over = {"trainer.strategy": "ddp", "trainer.devices": "2", "trainer.max_steps": steps}
    on_policy, copies, fsdp = "on-policy" in flags, "copies" in flags, "fsdp" in flags
    if copies:
        over["student.share_trunk"] = False
    if "still" in flags:
        over["optim.lr"] = 1e-12
    if "full" in flags:
        over["trainer.checkpoint_weights"] = "full"
    if on_policy:
        over |= {"data.on_policy.fraction": 1.0, "data.on_policy.max_new_tokens": 4}
    cfg = tiny_config(tmp, teacher, "kd" if on_policy else "dskd", over)
    if fsdp:  # after the config's checks, which refuse fsdp on a CPU accelerator for users
        cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, strategy="fsdp"))
        run.build_strategy = cpu_fsdp
        lightning_fsdp._get_full_state_dict_context = _cpu_state_dict_context
    # FSDP with copies: Lightning's validate after fit does not wrap the root again, and the weights the
    # root unit held (the copied embeddings) stay flat shards ("'weight' must be 2-D"); shared, the
    # root holds none of the model's weights
    val = 0 if fsdp and copies else 2
    n = 12 if fsdp else 8  # 6 steps an epoch: the resumed run (4 -> 6) starts within the epoch
    dm = random_batches(n=n, val=val)
    if "corpus" in flags:
        if not (tmp / "corpus.txt").exists():  # rank 1 starts after rank 0 wrote it
            write_corpus(tmp / "corpus.txt", docs=25)
        cfg = corpus_config(tmp, teacher, tmp / "corpus.txt", cfg.method, over)
        dm = real_datamodule(cfg)
    run.train(cfg, datamodule=dm, callbacks=[WriteWeightsAndBatches()], export=fsdp)
