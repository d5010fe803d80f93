"""The packages of dskd depend on each other in one direction only (read from the source with ast).

A package may import its own modules, the core, and packages of lower layers; never a package of its
own or a higher layer. Every import counts, including those deferred into functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dskd

PACKAGE = Path(dskd.__file__).resolve().parent

CORE = {
    "dskd",
    "devices",
    "trusted_load",
    "errors",
    "io",
    "outputs",
    "resources",
    "config",
    "config_rules",
    "ranges",
    "schema",
    "config_docs",
    "assets",
    "batch",
}
"""Errors, files and output folders, packaged resources, assets, the batch contract and the config
schema, its ranges and cross-key rules (with every package's ``config`` module, see ``layer``)."""
LAYERS = [
    {"corpora", "models", "losses", "tracking"},
    {"lexicon"},
    {"data", "senses"},
    {"teacher_cache"},
    {"training", "evaluation", "testing"},
    {"launch"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
"""Lowest first: text readers, models, losses and W&B tracking (artifacts, offline run files); the
lexicon; the training stream and the sense dictionary; the teacher cache; the stages (and the synthetic
stand-ins); orchestration; the CLI."""


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(root: Path, name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def imports(root: Path, path: Path) -> set[str]:
    """The dskd modules ``path`` imports (``from dskd import x`` names module ``dskd.x`` when x is one)."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            subs = {f"{base}.{a.name}" for a in node.names if is_module(root, f"{base}.{a.name}")}
            found |= subs or {base}
    return {m for m in found if m == "dskd" or m.startswith("dskd.")}


def layer(module: str) -> int:
    """-1 for the core, else the index in LAYERS of the module's top-level package."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "dskd"
    if top in CORE or parts[-1] == "config":
        return -1
    for i, packages in enumerate(LAYERS):
        if top in packages:
            return i
    raise AssertionError(f"{module} belongs to no layer: add its package to CORE or LAYERS in {__file__}")


def violations(root: Path) -> list[str]:
    """Every import of the package at ``root`` that does not point down the layers."""
    wrong = []
    for path in sorted(root.rglob("*.py")):
        source = module_name(root, path)
        for target in imports(root, path):
            same_package = source.split(".")[:2] == target.split(".")[:2]
            if not same_package and layer(target) >= layer(source) and layer(source) != -1:
                wrong.append(f"{source} -> {target}")
            elif layer(source) == -1 and layer(target) != -1:
                wrong.append(f"{source} (core) -> {target}")
    return wrong


def test_every_import_points_down():
    wrong = violations(PACKAGE)
    assert not wrong, "imports against the layering (see LAYERS in tests/test_layers.py):\n" + "\n".join(
        wrong
    )


def test_the_check_sees_upward_and_core_imports(tmp_path):
    root = tmp_path / "dskd"
    for name, text in {
        "__init__.py": "",
        "errors.py": "from dskd.losses import kd\n",
        "losses/__init__.py": "",
        "losses/kd.py": "from dskd.errors import DSKDError\n",
        "losses/config.py": "",
        "models/__init__.py": "from . import loading\n",
        "models/loading.py": "def load():\n    from ..losses import config, kd\n",
        "training/__init__.py": "",
        "training/run.py": "import dskd.losses.kd\nfrom dskd.models import loading\n",
        "data/stream.py": "from dskd import training\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert sorted(violations(root)) == [
        "dskd.data.stream -> dskd.training",
        "dskd.errors (core) -> dskd.losses.kd",
        "dskd.models.loading -> dskd.losses.kd",  # same layer; a deferred, relative import still counts
    ]
