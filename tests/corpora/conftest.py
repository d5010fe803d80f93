"""Helpers of the corpora tests: fixture QA records and the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def records(kind: str) -> list[dict]:
    with open(FIXTURES / f"{kind}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def tokenizer(smollm2_tokenizer):
    return smollm2_tokenizer
