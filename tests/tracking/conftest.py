"""The training tests' tiny teacher folder, shared."""

from ..training.conftest import teacher_dir  # noqa: F401
