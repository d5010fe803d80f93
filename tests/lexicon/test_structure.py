"""A lexicon whose CSR tables were overwritten in place (same file size, so the default size check
passes) is refused at load with one line naming the array and the rebuild command."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from dskd.cli import main
from dskd.core.errors import DSKDError
from dskd.lexicon import Lexicon
from dskd.lexicon.artifact import ARRAYS

from .test_build import _write_config


@pytest.fixture
def built(tmp_path, word_tokenizer):
    tok_dir = tmp_path / "tok"
    word_tokenizer.save_pretrained(tok_dir)
    assert main(["lexicon", "build", _write_config(tmp_path, tok_dir)]) == 0
    return tmp_path / "art" / "lexicon"


def _overwrite(directory, name: str, value: int) -> None:
    """Fill array ``name`` of the lexicon with ``value`` in place: same shapes, same file size."""
    path = directory / ARRAYS
    size = path.stat().st_size
    arrays = load_file(str(path))
    arrays[name] = np.full_like(arrays[name], value)
    save_file(arrays, str(path))
    assert path.stat().st_size == size


def test_an_intact_lexicon_loads(built):
    assert Lexicon.load(built).vocab_size == 26


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("syn_indptr", -1, r"'syn_indptr' runs from -1 to -1, not from 0 to its \d+ entries"),
        ("syn_indices", -1, r"'syn_indices' holds \d+ entries outside 0..26 \(token ids and VIDs\), e.g. -1"),
        ("ant_indices", 1000, r"'ant_indices' holds \d+ entries outside 0..26"),
        ("vid_token_ids", 26, r"'vid_token_ids' holds 2 entries outside 0..25 \(token ids\)"),
    ],
)
def test_an_overwritten_table_is_refused_at_load(built, name, value, problem):
    _overwrite(built, name, value)
    with pytest.raises(DSKDError, match=problem) as err:
        Lexicon.load(built)
    message = str(err.value)
    assert "\n" not in message and f"{ARRAYS} is damaged" in message
    assert message.endswith("Rebuild it with `dskd lexicon build CONFIG`.")


def test_decreasing_pointers_are_refused(built):
    path = built / ARRAYS
    arrays = load_file(str(path))
    indptr = arrays["ant_indptr"]
    row = int(np.flatnonzero(indptr[:-1])[0])  # the first row starting after an entry
    indptr[row] = indptr[-1] + 5  # points past the end; the next pointer is smaller
    save_file(arrays, str(path))
    with pytest.raises(DSKDError, match=rf"'ant_indptr' decreases at row {row} "):
        Lexicon.load(built)
