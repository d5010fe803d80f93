"""Load teachers, students and tokenizers from an asset name, a local folder or a hub id.

``spec`` is resolved in that order: a name from :data:`dskd.assets.ASSETS` (fetched on demand), an
existing local folder, otherwise a Hugging Face hub id (works where the hub is reachable).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from dskd.assets import ASSETS, asset_path
from dskd.core.errors import ConfigError, DSKDError
from dskd.models.config import DTYPES


def resolve_model(spec: str | Path) -> str | Path:
    """Asset name -> its folder, existing folder -> that path, anything else -> a hub id (str)."""
    text = str(spec)
    if text in ASSETS:
        return asset_path(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if text.startswith((".", "/", "~")) or path.exists():
        raise DSKDError(
            f"Model '{text}' is not a folder. Give an asset name (`dskd assets list`), a "
            "local Hugging Face folder (with config.json) or a hub id like 'org/name'."
        )
    return text


def resolve_dtype(dtype: Any):
    """``"auto"`` is bfloat16 on CUDA and float32 on CPU; a ``torch.dtype`` passes through."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"Unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}.")
    return getattr(torch, dtype)


def runtime_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The dtype a teacher of ``teacher.dtype`` runs in on ``device``: auto is float32 on a CPU."""
    return torch.float32 if device.type == "cpu" and dtype == "auto" else resolve_dtype(dtype)


def _load_error(what: str, spec: str | Path, resolved: str | Path, error: Exception) -> DSKDError:
    reason = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
    where = "local folder" if isinstance(resolved, Path) else "hub id"
    return DSKDError(
        f"Could not load the {what} '{spec}' (as {where} {resolved}): {reason}. Use an asset name "
        "(`dskd assets list`, e.g. smollm2-135m-instruct), a local Hugging Face folder, or a hub id on a "
        "machine that can reach the hub (unset HF_HUB_OFFLINE); for a corrupt asset run "
        "`dskd assets fetch NAME --force`, for a damaged export `dskd export` it again."
    )


def _hub_kwargs(resolved: str | Path, revision: str | None) -> dict[str, Any]:
    return {"revision": revision} if revision and not isinstance(resolved, Path) else {}


LOADER_KWARGS = ("is_local", "local_files_only")
"""What ``from_pretrained`` adds to a tokenizer's ``init_kwargs`` about how it was loaded (transformers 5);
``save_pretrained`` would write them into ``tokenizer_config.json``, and a pushed export would carry them."""


def load_tokenizer(spec: str | Path, revision: str | None = None):
    """The tokenizer of ``spec`` via ``AutoTokenizer.from_pretrained``, without the loader's kwargs (so
    that it saves as the files it was read from)."""
    resolved = resolve_model(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, **_hub_kwargs(resolved, revision))
    except (OSError, ValueError, KeyError) as e:
        raise _load_error("tokenizer", spec, resolved, e) from e
    for key in LOADER_KWARGS:
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer


def plain_hf_progress() -> None:
    """Off a terminal, no transformers progress bars (``Loading weights``, ``Writing model shards``): they
    last a second, and their carriage returns would pile up in a log (a SLURM ``.out`` file)."""
    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()


def load_causal_lm(spec: str | Path, dtype: Any = "auto", revision: str | None = None, device: Any = None):
    """A causal LM (eval mode) via ``AutoModelForCausalLM.from_pretrained`` in ``dtype``; ``device``:
    load the weights straight onto that device (no full copy on the host first; default: the CPU)."""
    plain_hf_progress()
    torch_dtype = resolve_dtype(dtype)
    resolved = resolve_model(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved,
            dtype=torch_dtype,
            **({"device_map": {"": device}} if device is not None else {}),
            **_hub_kwargs(resolved, revision),
        )
    except (OSError, ValueError, KeyError, SafetensorError) as e:  # SafetensorError: a damaged file
        raise _load_error("model", spec, resolved, e) from e
    return model.eval()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 over the sorted (token, id) vocabulary and the sorted special tokens.

    Stable across processes and machines; two tokenizers with the same fingerprint map every
    string piece to the same ids, so artifacts keyed by token id can be shared between them.
    """
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": sorted(str(t) for t in tokenizer.all_special_tokens),
    }
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()
