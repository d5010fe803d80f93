"""Trusted loading of checkpoint files: ``torch.load(weights_only=True)``, so a crafted checkpoint cannot
run code, with one-line errors for anything that is not a checkpoint written by ``dskd train``.
(Saving and resume live in :mod:`dskd.training.checkpoints`.)"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

from dskd.core.errors import DSKDError


class CheckpointError(DSKDError):
    """A checkpoint is damaged, was not written by ``dskd train``, or holds objects other than data."""


def _unreadable(path: str | os.PathLike, error: Exception) -> CheckpointError:
    reason = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else ""
    return CheckpointError(
        f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}{': ' if reason else ''}"
        f"{reason}); it is damaged, empty or another kind of file."
    )


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path`` loaded on the CPU with ``weights_only=True``.

    Raises :class:`CheckpointError` (one line, nothing executed) when the file holds anything but
    tensors and plain values, or cannot be read.
    """
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise _unreadable(path, e) from e
        detail = next((line for line in str(e).splitlines() if "GLOBAL" in line), "").strip()
        raise CheckpointError(
            f"Refusing to load {path}: it holds objects other than tensors and plain values "
            f"({detail or 'unsupported pickle content'}), which could run code; only checkpoints written "
            "by `dskd train` are loaded."
        ) from e
    except Exception as e:  # a file that is no checkpoint fails in pickle, zip or torch code
        raise _unreadable(path, e) from e
    if not isinstance(ckpt, dict) or "dskd" not in ckpt or "global_step" not in ckpt:
        raise CheckpointError(f"{path} was not written by `dskd train` (it has no 'dskd' section).")
    return ckpt
