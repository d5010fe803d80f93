"""Sweep files: a W&B grid sweep whose command is ``dskd train BASE.yaml ${args_no_hyphens}``, and its grid.

``parameters`` with ``values`` are the knobs, with ``value`` fixed overrides; literal ``key=value``
items after the base config in the command are fixed overrides too. Each grid point's config is
base + fixed + point + extra overrides, loaded exactly as ``dskd train`` would load it under a W&B agent.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dskd.config.loading import load_config
from dskd.config.schema import ExperimentConfig
from dskd.core.errors import ConfigError, DSKDError
from dskd.core.outputs import check_name
from dskd.training.run import run_dir


@dataclass(frozen=True)
class Sweep:
    """A grid sweep file: base config, fixed overrides and knobs (key -> values), in file order."""

    path: Path
    name: str
    base_config: str
    fixed: dict[str, Any]
    knobs: dict[str, list[Any]]
    metric: str | None = None


@dataclass
class Point:
    """One grid point: its knob settings, its full override list and the resolved config."""

    settings: dict[str, Any]
    overrides: list[str]
    cfg: ExperimentConfig

    @property
    def run_dir(self) -> Path:
        return run_dir(self.cfg.runs_dir, self.cfg.name, self.cfg.seed)


def _check_mapping(value: Any, what: str) -> dict[str, Any]:
    """``value`` if it is a YAML mapping, else a :class:`ConfigError` naming ``what`` and what it is."""
    if not isinstance(value, dict):
        raise ConfigError(
            f"{what} is a YAML {type(value).__name__} where a mapping (`key: value` lines) is expected; "
            "see the sweeps in experiments/sweeps/."
        )
    return value


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a W&B grid sweep file whose command is ``dskd train BASE.yaml ...``."""
    path = Path(path)
    if not path.is_file():
        raise DSKDError(f"Sweep file '{path}' not found; the shipped ones are in experiments/sweeps/.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"Sweep file '{path}' is not valid YAML: {e}") from e
    _check_mapping(data, f"Sweep file '{path}'")
    if data.get("method") != "grid":
        raise ConfigError(
            f"Sweep '{path}' has method {data.get('method')!r}; `dskd ablate` runs grids only (method: grid)."
        )
    command = [str(c) for c in data.get("command") or []]
    if "train" not in command or command.index("train") + 1 >= len(command):
        raise ConfigError(
            f"Sweep '{path}': its command must run `dskd train BASE.yaml ${{args_no_hyphens}}`; "
            f"got {command}."
        )
    rest = command[command.index("train") + 1 :]
    fixed = dict(_split_override(c, path) for c in rest[1:] if not c.startswith("${"))
    knobs: dict[str, list[Any]] = {}
    parameters = _check_mapping(data.get("parameters") or {}, f"Sweep '{path}': its parameters")
    for key, spec in parameters.items():
        if (
            isinstance(spec, dict)
            and "values" in spec
            and isinstance(spec["values"], list)
            and spec["values"]
        ):
            knobs[key] = list(spec["values"])
        elif isinstance(spec, dict) and "value" in spec:
            fixed[key] = spec["value"]
        else:
            raise ConfigError(
                f"Sweep '{path}': parameter '{key}' needs `values: [...]` (a knob) or `value: X` (fixed); "
                "distributions cannot be run as a grid."
            )
    if not knobs:
        raise ConfigError(f"Sweep '{path}' has no knob (a parameter with `values: [...]`).")
    metric = _check_mapping(data.get("metric") or {}, f"Sweep '{path}': its metric").get("name")
    name = check_name(
        str(data.get("name") or path.stem), f"Sweep '{path}': the name"
    )  # results/ablations/NAME
    return Sweep(path, name, rest[0], fixed, knobs, metric)


def _split_override(item: str, path: Path) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"Sweep '{path}': command item '{item}' after the base config is not key=value.")
    key, raw = item.split("=", 1)
    return key, yaml.safe_load(raw) if raw else ""


def grid(sweep: Sweep) -> list[dict[str, Any]]:
    """All knob settings, the last knob varying fastest (the order of a W&B grid)."""
    keys = list(sweep.knobs)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*sweep.knobs.values())]


def format_override(key: str, value: Any) -> str:
    """``key=value`` that the config loader parses back to ``value`` (JSON where YAML would misread it)."""
    try:
        plain = isinstance(value, str) and value != "" and yaml.safe_load(value) == value
    except yaml.YAMLError:
        plain = False
    return f"{key}={value if plain else json.dumps(value)}"


def _default_name(sweep: Sweep) -> str:
    return "-".join(f"{key.rsplit('.', 1)[-1]}${{{key}}}" for key in sweep.knobs)


def point_configs(sweep: Sweep, extra: list[str] | None = None, base: str | None = None) -> list[Point]:
    """The resolved config of every grid point; ``extra`` key=value overrides apply last to all points."""
    extra = list(extra or [])
    clash = sorted({item.split("=", 1)[0] for item in extra} & set(sweep.knobs))
    if clash:
        raise ConfigError(f"Override(s) of {', '.join(clash)} clash with knobs of the sweep '{sweep.path}'.")
    fixed = dict(sweep.fixed)
    fixed.setdefault("name", _default_name(sweep))
    points = []
    for settings in grid(sweep):
        overrides = [format_override(k, v) for k, v in {**fixed, **settings}.items()] + extra
        cfg = load_config(base or sweep.base_config, overrides)
        cfg.logging.tags = [*cfg.logging.tags, f"ablation:{sweep.name}"]
        points.append(Point(settings, overrides, cfg))
    seen: dict[Path, dict[str, Any]] = {}
    for p in points:
        if p.run_dir in seen:
            raise ConfigError(
                f"Grid points {seen[p.run_dir]} and {p.settings} of '{sweep.path}' share the run folder "
                f"{p.run_dir}; make the `name` parameter name every knob, e.g. "
                f'value: "{_default_name(sweep)}".'
            )
        seen[p.run_dir] = p.settings
    return points
