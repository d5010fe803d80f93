"""The limits that keep the core readable (docs/method.md, "Where each piece lives"): the training
module's class under 250 lines, at most 6 parameters per function (kernels that say why excepted),
and the whole experiment config taken only by the stage entry points."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dskd"
KERNEL_NOTE = "Kernel: "
"""How a function's docstring says why it takes more than 6 parameters."""


def _trees() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))}


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
    return len([n for n in names if n.arg not in ("self", "cls")])


def over_six(trees: dict[Path, ast.Module]) -> list[str]:
    """``path:function (n)`` of every function with more than 6 parameters and no kernel note."""
    found = []
    for path, tree in trees.items():
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and _parameters(fn) > 6:
                if KERNEL_NOTE not in (ast.get_docstring(fn) or ""):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{fn.name} ({_parameters(fn)})")
    return found


def test_the_training_module_class_is_under_250_lines():
    tree = _trees()[PACKAGE / "training" / "module.py"]
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DistillationModule"]
    assert cls.end_lineno - cls.lineno + 1 < 250


def test_no_function_takes_more_than_six_parameters_unless_a_documented_kernel():
    assert over_six(_trees()) == []


def test_the_check_sees_a_seventh_parameter_and_accepts_a_kernel_note():
    src = (
        "def wide(a, b, c, d, e, f, g):\n    pass\n"
        "def kernel(a, b, c, d, e, f, g):\n    '''Kernel: a batched routine.'''\n"
        "def method(self, a, b, c, d, e, f):\n    pass\n"
    )
    assert over_six({PACKAGE / "x.py": ast.parse(src)}) == ["dskd/x.py:wide (7)"]


def test_only_the_stage_entry_points_take_the_whole_config():
    text = "".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py"))
    assert text.count("cfg: ExperimentConfig") <= 10
