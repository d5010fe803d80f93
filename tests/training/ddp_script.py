"""A 2-process DDP run on CPU (gloo), launched by test_ddp.py: `python ddp_script.py TMP TEACHER_DIR`.

Lightning starts the second process by running this script again; each process writes the sum of
its trainable weights so the test can check that gradient averaging kept them identical.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from tinyrun import make_senses, random_batches, tiny_config  # noqa: E402

from dskd.training.run import train  # noqa: E402


class WriteWeights(pl.Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        flat = torch.cat([p.detach().flatten() for p in pl_module.parameters() if p.requires_grad])
        torch.save(flat, Path(sys.argv[1]) / f"weights-rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    tmp, teacher = Path(sys.argv[1]), Path(sys.argv[2])
    if not (tmp / "senses").exists():
        make_senses(tmp / "senses", teacher)
    over = {"trainer.strategy": "ddp", "trainer.devices": "2", "trainer.max_steps": 4}
    cfg = tiny_config(tmp, teacher, "dskd", over)
    train(cfg, datamodule=random_batches(n=8), callbacks=[WriteWeights()], export=False)
