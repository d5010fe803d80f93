"""Fixtures shared by the evaluation tests."""

import pytest


@pytest.fixture(scope="module")
def tiny():
    """A tiny random Llama (float32, large init so its outputs vary) and a word tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    from dskd.testing.fixtures import llama_config, word_tokenizer

    config = llama_config(48, 32, 2, max_len=128)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), word_tokenizer(48)
