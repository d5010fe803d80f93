"""Every config key is documented, and docs/config.md is current."""

from __future__ import annotations

from pathlib import Path

from dskd.config.docs import render, rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_every_key_has_a_docstring():
    undocumented = [key for key, _, _, _, doc in rows() if not doc]
    assert undocumented == []


def test_reference_is_current():
    assert DOC.read_text(encoding="utf-8") == render(), "run: python -m dskd.config.docs > docs/config.md"
