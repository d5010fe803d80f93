"""Imports sit at the top of every library module (read from the source with ast).

An import inside a function hides a dependency from the module's header. The exceptions are the CLI
(``dskd/commands/``, ``dskd/cli.py``: ``dskd --help`` stays fast), heavy optional libraries, and
modules whose top-level import would make config loading import torch; each says why in a
``# deferred: <reason>`` comment on the line above it (or at the end of its line), and there are few.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import dskd

PACKAGE = Path(dskd.__file__).resolve().parent
MAX_DEFERRED = 25
"""At most this many imports inside functions in the library (the CLI not counted)."""
CLI = ("commands", "cli.py")
"""Paths under the package where lazy imports belong (a fast ``dskd --help``): not counted."""
REASON = "# deferred:"


def deferred_imports(root: Path) -> list[tuple[str, int, bool]]:
    """``(file:line, line, has_reason)`` of every import statement inside a function under ``root``
    (the CLI aside); ``has_reason``: a ``# deferred:`` comment on the line above or at the line's end."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in CLI:
            continue
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        nodes = {
            id(node): node
            for fn in ast.walk(ast.parse(text))
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(fn)
            if isinstance(node, ast.Import | ast.ImportFrom)
        }
        for node in sorted(nodes.values(), key=lambda n: n.lineno):
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            has_reason = above.startswith(REASON) or REASON in lines[node.lineno - 1]
            found.append((f"{root.name}/{rel}:{node.lineno}", node.lineno, has_reason))
    return found


def problems(root: Path) -> list[str]:
    """What breaks the rule under ``root``: too many deferred imports, and each one without a reason."""
    found = deferred_imports(root)
    out = [
        f"{where}: import inside a function without a '{REASON} <reason>' comment"
        for where, _, ok in found
        if not ok
    ]
    if len(found) > MAX_DEFERRED:
        files = Counter(where.rpartition(":")[0] for where, _, _ in found)
        per_file = ", ".join(f"{f} ({n})" for f, n in sorted(files.items()))
        out.append(f"{len(found)} imports inside functions (at most {MAX_DEFERRED}) in: {per_file}")
    return out


def test_imports_sit_at_the_top_of_the_library_modules():
    found = problems(PACKAGE)
    assert not found, "move these imports to the top of their module, or say why not:\n" + "\n".join(found)


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_check_counts_deferred_imports_and_asks_each_for_a_reason(tmp_path):
    good = _package(
        tmp_path / "good" / "dskd",
        {
            "__init__.py": "import os\n",
            "plots.py": "def plot():\n    # deferred: matplotlib is heavy\n    import matplotlib\n",
            "stats.py": "class A:\n    def f(self):\n        from scipy import stats  # deferred: optional\n",
            "commands/train.py": "def run():\n    from dskd import plots\n",  # the CLI is not counted
            "cli.py": "def main():\n    import json\n",
        },
    )
    assert [(w, ok) for w, _, ok in deferred_imports(good)] == [
        ("dskd/plots.py:3", True),
        ("dskd/stats.py:3", True),
    ]
    assert problems(good) == []

    bad = _package(
        tmp_path / "bad" / "dskd",
        {
            "__init__.py": "",
            "run.py": "def go():\n    import torch\n\n    # not a reason\n    from dskd import data\n",
            "many.py": "".join(
                f"def f{i}():\n    import os  # deferred: test\n" for i in range(MAX_DEFERRED)
            ),
        },
    )
    assert problems(bad) == [
        f"dskd/run.py:2: import inside a function without a '{REASON} <reason>' comment",
        f"dskd/run.py:5: import inside a function without a '{REASON} <reason>' comment",
        f"{MAX_DEFERRED + 2} imports inside functions (at most {MAX_DEFERRED}) in: "
        f"dskd/many.py ({MAX_DEFERRED}), dskd/run.py (2)",
    ]
