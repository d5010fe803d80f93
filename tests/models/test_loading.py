"""Model and tokenizer loading from an asset name, a local folder or a hub id."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dskd.assets import asset_path
from dskd.core.errors import ConfigError, DSKDError
from dskd.models.loading import (
    load_causal_lm,
    load_tokenizer,
    resolve_dtype,
    resolve_model,
    tokenizer_fingerprint,
)


def test_resolve_model(tmp_path):
    assert resolve_model(tmp_path) == tmp_path
    assert resolve_model(str(tmp_path)) == tmp_path
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(DSKDError, match="is not a folder"):
        resolve_model(str(tmp_path / "missing"))


def test_resolve_dtype():
    assert resolve_dtype("auto") == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    assert resolve_dtype("float16") == torch.float16 and resolve_dtype(torch.bfloat16) == torch.bfloat16
    with pytest.raises(ConfigError, match="Unknown dtype 'fp8'"):
        resolve_dtype("fp8")


def test_load_causal_lm_from_a_local_folder(tmp_path, tiny_llama_config):
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_config(tiny_llama_config())
    reference.save_pretrained(tmp_path)
    model = load_causal_lm(tmp_path, dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training
    ids = torch.tensor([[1, 5, 7, 3]])
    with torch.no_grad():
        expected = reference(ids).logits
        got = load_causal_lm(tmp_path, dtype="float32")(ids).logits
    torch.testing.assert_close(got, expected)


def test_a_truncated_safetensors_file_is_a_user_error(tmp_path, tiny_llama_config):
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_config(tiny_llama_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(DSKDError) as e:  # before: safetensors' SafetensorError traceback (dskd eval)
        load_causal_lm(tmp_path)
    assert str(e.value).startswith(f"Could not load the model '{tmp_path}' (as local folder {tmp_path}): ")
    assert "for a damaged export `dskd export` it again" in str(e.value)


def test_unloadable_specs_are_user_errors(tmp_path):
    with pytest.raises(DSKDError, match="Could not load the model '.*' \\(as local folder"):
        load_causal_lm(tmp_path)  # a folder without config.json
    with pytest.raises(
        DSKDError, match="Could not load the tokenizer 'no-such-org/no-such-model' \\(as hub id"
    ):
        load_tokenizer("no-such-org/no-such-model")  # HF_HUB_OFFLINE=1 in conftest


@pytest.mark.integration
def test_teacher_asset_loads_by_name():
    model = load_causal_lm("smollm2-135m-instruct")
    tok = load_tokenizer("smollm2-135m-instruct")
    assert resolve_model("smollm2-135m-instruct") == asset_path("smollm2-135m-instruct")
    assert model.dtype == resolve_dtype("auto") and model.config.vocab_size == len(tok) == 49152


FINGERPRINT_CODE = "from dskd.models.loading import *; print(tokenizer_fingerprint(load_tokenizer({!r})))"


@pytest.mark.integration
def test_tokenizer_fingerprint_is_stable_and_sensitive():
    folder = asset_path("smollm2-135m-instruct")
    tok = load_tokenizer(folder)
    fp = tokenizer_fingerprint(tok)
    assert len(fp) == 64 and int(fp, 16) >= 0
    child = subprocess.run(
        [sys.executable, "-c", FINGERPRINT_CODE.format(str(folder))],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == fp  # same value in another process (no hash randomisation)
    tok.add_tokens(["<sense>"])
    assert tokenizer_fingerprint(tok) != fp
