"""The packages of dskd depend on each other in one direction only (read from the source with ast).

A package may import its own modules, the core, and packages of lower layers; never a package of its
own or a higher layer. Every import counts, including those deferred into functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dskd

PACKAGE = Path(dskd.__file__).resolve().parent

CORE = {"dskd", "core", "config", "resources", "assets"}
"""Errors, files and output folders, devices and the batch contract (``core``); loading, schema, ranges,
rules and docs of the config (``config``); packaged resources; assets."""
SCHEMA = "dskd.config"
"""The one core package allowed to import upwards, and only the ``config`` module of a stage package:
the schema gathers every stage's section. A section module itself sits at its package's layer."""
LAYERS = [
    {"corpora", "models", "losses", "tracking"},
    {"lexicon"},
    {"data", "senses"},
    {"teacher_cache"},
    {"training", "evaluation"},
    {"testing"},
    {"launch"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
"""Lowest first: text readers, models, losses and W&B tracking (artifacts, offline run files); the
lexicon; the training stream and the sense dictionary; the teacher cache; the stages; the synthetic
teachers, tokenizers and rehearsal stand-ins; orchestration; the CLI."""


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
    if top in CORE:
        return -1
    for i, packages in enumerate(LAYERS):
        if top in packages:
            return i
    raise AssertionError(f"{module} belongs to no layer: add its package to CORE or LAYERS in {__file__}")


def allowed(source: str, target: str) -> bool:
    """Whether ``source`` may import ``target`` across packages (see LAYERS, CORE and SCHEMA)."""
    if layer(source) == -1:
        gathers_a_section = source.startswith(SCHEMA + ".") and target.endswith(".config")
        return layer(target) == -1 or gathers_a_section
    return layer(target) < layer(source)


def violations(root: Path) -> list[str]:
    """Every import of the package at ``root`` that does not point down the layers."""
    wrong = []
    for path in sorted(root.rglob("*.py")):
        source = module_name(root, path)
        for target in imports(root, path):
            same_package = source.split(".")[:2] == target.split(".")[:2]
            if not same_package and not allowed(source, target):
                kind = " (core)" if layer(source) == -1 else ""
                wrong.append(f"{source}{kind} -> {target}")
    return wrong


def cycles(root: Path) -> list[str]:
    """The modules of one package that import each other in a circle, one line per circle (a strongly
    connected set of the import graph, deferred imports and ``__init__`` included)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        source = module_name(root, path)
        package = source.split(".")[:2]
        graph[source] = {t for t in imports(root, path) if t.split(".")[:2] == package and t != source}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {module: reach(module) for module in graph}
    circles = {
        frozenset({m} | {o for o in reachable[m] if m in reachable.get(o, ())})
        for m in graph
        if m in reachable[m]
    }
    return sorted(" <-> ".join(sorted(circle)) for circle in circles)


def test_every_import_points_down():
    wrong = violations(PACKAGE)
    assert not wrong, "imports against the layering (see LAYERS in tests/test_layers.py):\n" + "\n".join(
        wrong
    )


def test_no_package_imports_itself_in_a_circle():
    found = cycles(PACKAGE)
    assert not found, "import cycles inside a package:\n" + "\n".join(found)


def test_the_check_sees_upward_core_config_and_circular_imports(tmp_path):
    root = tmp_path / "dskd"
    for name, text in {
        "__init__.py": "",
        "core/errors.py": "from dskd.losses import kd\n",
        "config/schema.py": "from dskd.data.config import DataConfig\nfrom dskd.data import stream\n",
        "corpora/sources.py": "from dskd.data.config import SourceConfig\n",
        "losses/__init__.py": "",
        "losses/kd.py": "from dskd.core.errors import DSKDError\n",
        "losses/config.py": "",
        "models/__init__.py": "from . import loading\n",
        "models/loading.py": "def load():\n    from ..losses import config, kd\n",
        "training/__init__.py": "",
        "training/run.py": "import dskd.losses.kd\nfrom dskd.training import fit\n",
        "training/fit.py": "def go():\n    from dskd.training.run import main\n",
        "data/__init__.py": "",
        "data/config.py": "from dskd.corpora import sources\n",
        "data/stream.py": "from dskd import training\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert sorted(violations(root)) == [
        "dskd.config.schema (core) -> dskd.data.stream",  # the schema may gather sections, nothing else
        "dskd.core.errors (core) -> dskd.losses.kd",
        "dskd.corpora.sources -> dskd.data.config",  # a section module sits at its package's layer
        "dskd.data.stream -> dskd.training",
        "dskd.models.loading -> dskd.losses.config",  # same layer, deferred and relative: it still counts
        "dskd.models.loading -> dskd.losses.kd",
    ]
    assert cycles(root) == ["dskd.training.fit <-> dskd.training.run"]
