"""Wrapped errors keep their cause: no ``raise ... from None`` inside an ``except`` of the package.

`dskd --debug` (or DSKD_DEBUG=1) shows the full traceback, which is only useful with the original
library error chained as ``__cause__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dskd

PACKAGE = Path(dskd.__file__).resolve().parent


def test_no_error_is_raised_from_none():
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            cause = getattr(node, "cause", None)
            if isinstance(node, ast.Raise) and isinstance(cause, ast.Constant) and cause.value is None:
                hidden.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert hidden == [], "chain the caught error (`raise X(...) from e`), not `from None`"
