"""The W&B session of this process: online or offline, and closing a run so that its files are complete."""

from __future__ import annotations

import os
import sys


def wandb_online() -> bool:
    """True when W&B should talk to the server (WANDB_MODE=online, or an API key and no offline mode)."""
    mode = os.environ.get("WANDB_MODE", "")
    if mode == "online":
        return True
    return bool(os.environ.get("WANDB_API_KEY")) and mode not in ("offline", "disabled", "dryrun")


def finish_wandb() -> None:
    """Close this process's W&B run, so that the next run in the same process starts its own, and wait
    until its files are written (``wandb.finish`` alone returns before the offline log is complete)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
        wandb.teardown()
