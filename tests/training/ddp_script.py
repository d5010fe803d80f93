"""A 2-process DDP run on CPU (gloo), launched by test_ddp.py: `python ddp_script.py TMP TEACHER_DIR
[on-policy] [copies]` (on-policy: method kd with every batch on-policy, each rank generating for its
own; copies: student.share_trunk=false, the student holds copies of the teacher's frozen modules).

Lightning starts the second process by running this script again; each process writes its trainable
weights (so the test can check that gradient averaging kept them identical) and the input ids of
every batch it trained on (so the test can check that the processes saw different data).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from tinyrun import make_senses, random_batches, tiny_config  # noqa: E402

from dskd.training.run import train  # noqa: E402


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
    over = {"trainer.strategy": "ddp", "trainer.devices": "2", "trainer.max_steps": 4}
    on_policy = "on-policy" in sys.argv[3:]
    if "copies" in sys.argv[3:]:
        over["student.share_trunk"] = False
    if on_policy:
        over |= {"data.on_policy.fraction": 1.0, "data.on_policy.max_new_tokens": 4}
    cfg = tiny_config(tmp, teacher, "kd" if on_policy else "dskd", over)
    train(cfg, datamodule=random_batches(n=8), callbacks=[WriteWeightsAndBatches()], export=False)
