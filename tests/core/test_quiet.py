"""Known third-party noise: each message dropped exactly, everything else the library says still shown."""

from __future__ import annotations

import logging
import os
import warnings

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

from dskd.core.quiet import DEEPSPEED_ON_CPU, drop_message, eval_modules_intended, quiet_lightning


def test_a_dropped_message_stays_dropped_after_the_library_resets_its_logger(caplog):
    drop_message(DEEPSPEED_ON_CPU)
    drop_message(DEEPSPEED_ON_CPU)  # idempotent
    logger = logging.getLogger("DeepSpeed")
    logger.setLevel(logging.INFO)  # what DeepSpeed's logger factory does on import
    with caplog.at_level(logging.INFO, logger="DeepSpeed"):
        logger.propagate = True
        logger.warning("Setting accelerator to CPU. If you have GPU or other accelerator, ...")
        logger.warning("Setting accelerator to CUDA")
    assert [r.getMessage() for r in caplog.records] == ["Setting accelerator to CUDA"]
    assert len(logger.filters) == 1


class _Tiny(pl.LightningModule):
    def __init__(self, frozen_in_eval: bool = False) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.frozen = torch.nn.Linear(2, 2)
        if frozen_in_eval:
            self.frozen.eval()

    def training_step(self, batch, batch_idx):
        return self.layer(self.frozen(batch[0])).sum()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.layer.parameters(), lr=0.1)


def _fit(tmp_path, module: pl.LightningModule) -> None:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=CSVLogger(tmp_path, name="", version=""),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module)


def test_a_fit_after_quiet_lightning_has_no_tip_and_no_leafspec_warning(tmp_path, caplog):
    quiet_lightning(one_process=True)
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_lightning(one_process=True)  # inside catch_warnings: the filter it sets holds here
        _fit(tmp_path, _Tiny())
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("GPU available") for m in messages)  # Lightning's other lines stay
    assert not any("litlogger" in m for m in messages)
    assert not any("LeafSpec" in str(w.message) for w in seen)


def test_the_eval_mode_warning_is_silenced_only_where_intended(tmp_path):
    for intended in (False, True):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with eval_modules_intended(intended):
                _fit(tmp_path / str(intended), _Tiny(frozen_in_eval=True))
        found = any("in eval mode at the start of training" in str(w.message) for w in seen)
        assert found is not intended, intended


def test_the_srun_hint_is_silenced_for_a_run_of_one_process_only(tmp_path, monkeypatch):
    """Lightning hints at srun wherever srun is on the PATH and did not start the process."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for var in [v for v in os.environ if v.startswith("SLURM_")]:
        monkeypatch.delenv(var)
    for one_process in (False, True):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            quiet_lightning(one_process)  # inside catch_warnings: its filters go with the block
            _fit(tmp_path / str(one_process), _Tiny())
        found = any("`srun` command is available" in str(w.message) for w in seen)
        assert found is not one_process, one_process
