"""Fixtures of the training tests: a tiny random teacher folder and a sense dictionary for it."""

from __future__ import annotations

import pytest

from .tinyrun import make_model_dir, make_senses


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("teacher"))


@pytest.fixture
def run_tmp(tmp_path, teacher_dir):
    """A temporary folder with the sense dictionary of ``teacher_dir`` at ``senses/``."""
    make_senses(tmp_path / "senses", teacher_dir)
    return tmp_path
