"""Typed experiment configs: YAML files with an optional ``base:`` chain and ``key=value`` overrides.

``load_config("experiments/tiny/dskd.yaml", ["loss.sense.kappa=3"])`` returns a validated
:class:`ExperimentConfig`. Unknown keys name the closest valid key; wrong types name the key, the
expected and the given type; a value outside a key's choices (its ``Literal`` type) names the closest
choice; a number outside its declared range (:mod:`dskd.config.ranges`) names the range; combinations known
to fail are refused by :mod:`dskd.config.rules`. All of it runs before any model loads, and every
error is a :class:`~dskd.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
import warnings
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dskd.config.ranges import check_choice, check_value, choices
from dskd.config.rules import check_rules
from dskd.config.schema import ExperimentConfig
from dskd.core.errors import ConfigError

BASE_KEY = "base"
MOVED_KEYS = {
    "family": "preset",
    "teacher.cache_dir": "cache.dir",
    "teacher.cache_targets": "cache.kd_format",
    "teacher.cache_samples": "cache.samples",
    "teacher.cache_seed": "cache.seed",
    "teacher.cache_top_k": "cache.top_k",
    "teacher.cache_hidden_positions": "cache.hidden_positions",
    "data.targets_cache_dir": "data.continuations_dir",
    "data.targets_batch_size": "data.continuations_batch_size",
}
"""Keys renamed in 0.2 (old -> new): an old key is still read, moved to its new name with a message."""


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one YAML file and the ``base:`` files it builds on, merged (later wins)."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"Config files form a cycle through 'base:': {cycle}. Remove one 'base:' link.")
    if not path.is_file():
        where = f" (named as base of {chain[-1]})" if chain else ""
        raise ConfigError(
            f"Config file '{path}' not found{where}. Pass an existing YAML file, e.g. one under "
            "experiments/ (`ls experiments/tiny`)."
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file '{path}' is not valid YAML: {e}") from e
    if data is None or data == {}:
        raise ConfigError(
            f"Config file '{path}' is empty; write the keys of the run (or `base: <file>`), e.g. copy "
            "experiments/tiny/dskd.yaml."
        )
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of keys, not {type(data).__name__}.")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    bases = base if isinstance(base, list) else [base]
    merged: dict[str, Any] = {}
    for b in bases:
        merged = _deep_merge(merged, _read_yaml(path.parent / str(b), (*chain, path)))
    return _deep_merge(merged, data)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_overrides(overrides: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override '{item}' is not of the form key=value (e.g. trainer.max_steps=10).")
        key, raw = item.split("=", 1)
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"Override '{item}' has an empty key part; write dotted keys like loss.kd.tau=2."
            )
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override '{item}' conflicts with another override of '{part}'.")
        node[parts[-1]] = value
    return out


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _dataclass_of(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    if choices(tp):
        return f"one of: {', '.join(choices(tp))}"
    return str(tp).replace("typing.", "")


def _check_keys(data: dict[str, Any], cls: type, prefix: str, source: str) -> None:
    """Reject keys the schema does not know, naming the closest valid key."""
    fields = _field_types(cls)
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in fields and "." in key and full in _all_keys(ExperimentConfig):
            nested = ": {".join(full.split(".")) + ": ..." + "}" * full.count(".")
            raise ConfigError(
                f"Config key '{full}' (in {source}) is written with dots, which only key=value overrides "
                f"read; in a YAML file nest it: `{nested}` or one key per indented line."
            )
        if key not in fields:
            valid = [f"{prefix}{k}" for k in fields]
            close = (
                _abbreviation(full, valid)
                or difflib.get_close_matches(full, valid, n=1, cutoff=0.5)
                or difflib.get_close_matches(full, _all_keys(ExperimentConfig), n=1, cutoff=0.5)
            )
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid keys here: {', '.join(valid)}."
            raise ConfigError(f"Unknown config key '{full}' (in {source}).{hint}")
        sub = _dataclass_of(fields[key])
        if sub is not None and isinstance(value, (dict, list)):
            _check_shape(full, value, _is_list(fields[key]), sub, source)
        if sub is not None and isinstance(value, dict):
            _check_keys(value, sub, f"{full}.", source)
        elif sub is not None and isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    _check_keys(item, sub, f"{full}[{i}].", source)
        elif choices(fields[key]):
            check_choice(full, value, fields[key], source)
        elif not _matches(value, fields[key]):
            raise ConfigError(
                f"Config key '{full}' (in {source}) expects {_type_name(fields[key])}, got "
                f"{type(value).__name__} {value!r}. Fix the value in the YAML file or the key=value override."
            )


def _is_list(tp: Any) -> bool:
    """Whether an annotation is a list (also inside ``X | None``)."""
    return typing.get_origin(tp) is list or any(typing.get_origin(arg) is list for arg in typing.get_args(tp))


def _check_shape(key: str, value: dict | list, many: bool, sub: type, source: str) -> None:
    """Refuse a mapping where the schema has a list of ``sub`` sections, and a list where it has one."""
    if many == isinstance(value, list):
        return
    expected = (
        f"a list of {sub.__name__} entries (in YAML `- kind: ...` items; as an override `{key}=[{{...}}]`)"
        if many
        else f"a mapping of its keys ({', '.join(list(_field_types(sub))[:4])}, ...)"
    )
    raise ConfigError(
        f"Config key '{key}' (in {source}) expects {expected}, got a {type(value).__name__} {value!r}. Fix "
        "the value in the YAML file or the key=value override."
    )


def _initials(name: str) -> str:
    return "".join(word[0] for word in name.split("_") if word)


def _abbreviation(full: str, valid: list[str]) -> list[str]:
    """The key of ``valid`` whose last part abbreviates that of ``full`` or is spelled out by it, by the
    initials of its words (``optim.learning_rate`` -> ``optim.lr``, ``optim.wd`` -> ``optim.weight_decay``):
    difflib ranks such a pair low, as the two share few letters."""
    leaf = full.rpartition(".")[2]
    found = [
        k
        for k in valid
        if "_" in leaf + k.rpartition(".")[2]
        and leaf != k.rpartition(".")[2]
        and (_initials(leaf) == k.rpartition(".")[2] or _initials(k.rpartition(".")[2]) == leaf)
    ]
    return found[:1]


def _check_ranges(data: dict[str, Any], cls: type, prefix: str, source: str) -> None:
    """Check every resolved number of ``data`` (a section of schema class ``cls``) against its range."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    types_ = _field_types(cls)
    for name, value in data.items():
        key, sub = f"{prefix}{name}", _dataclass_of(types_[name])
        if sub is not None and isinstance(value, dict):
            _check_ranges(value, sub, f"{key}.", source)
        elif sub is not None and isinstance(value, list):
            for i, item in enumerate(value):
                _check_ranges(item, sub, f"{key}[{i}].", source)
        else:
            check_value(key, value, fields[name], source)


def _is_float_text(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _matches(value: Any, tp: Any) -> bool:
    """Whether a YAML value fits a schema annotation (int is accepted for float; ${...} always)."""
    if isinstance(value, str) and "${" in value:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_matches(v, item_tp) for v in value)
    if tp is Any:
        return True
    if tp is float:  # PyYAML reads 5e-5 (no dot) as a string; OmegaConf converts it
        return (isinstance(value, int | float) and not isinstance(value, bool)) or _is_float_text(value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is str:  # trainer.devices=2 is read as an int; OmegaConf stores it as "2"
        return isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool))
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _field_types(cls).items():
        keys.append(f"{prefix}{name}")
        sub = _dataclass_of(tp)
        if sub is not None:
            keys.extend(_all_keys(sub, f"{prefix}{name}."))
    return keys


def _expected_type(key: str) -> str:
    cls: Any = ExperimentConfig
    tp: Any = cls
    for part in key.replace("]", "").split("."):
        part = part.split("[")[0]
        sub = _dataclass_of(tp)
        if sub is None or part not in _field_types(sub):
            return "?"
        tp = _field_types(sub)[part]
    return _type_name(tp)


def _given(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        name, _, idx = part.partition("[")
        node = node.get(name) if isinstance(node, dict) else None
        if idx and isinstance(node, list):
            node = node[int(idx.rstrip("]"))]
    return node


def _move_renamed_keys(data: dict[str, Any], source: str) -> dict[str, Any]:
    """``data`` with every key of :data:`MOVED_KEYS` under its new name (and ``${old}`` interpolations
    rewritten), warning once per key; a file that sets both names is refused."""
    out = _deep_merge({}, data)
    for old, new in MOVED_KEYS.items():
        *old_path, old_leaf = old.split(".")
        parent = out
        for part in old_path:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or old_leaf not in parent:
            continue
        value = parent.pop(old_leaf)
        *new_path, new_leaf = new.split(".")
        node = out
        for part in new_path:
            node = node.setdefault(part, {})
        if new_leaf in node:
            raise ConfigError(
                f"Config sets both '{old}' and its new name '{new}' (in {source}); keep only '{new}'."
            )
        node[new_leaf] = value
        warnings.warn(
            f"Config key '{old}' is now '{new}' (in {source}); rename it, the old name goes in 0.3.",
            FutureWarning,
            stacklevel=3,
        )
    return _rewrite_interpolations(out)


def _rewrite_interpolations(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _rewrite_interpolations(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_interpolations(v) for v in node]
    if isinstance(node, str) and "${" in node:
        for old, new in MOVED_KEYS.items():
            node = node.replace("${" + old + "}", "${" + new + "}")
    return node


def config_from_dict(data: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a plain dict against the schema and return the typed config."""
    data = _move_renamed_keys(data, source)
    _check_keys(data, ExperimentConfig, "", source)
    schema = OmegaConf.structured(ExperimentConfig)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.create(data))
        OmegaConf.resolve(merged)
        _check_ranges(typing.cast(dict, OmegaConf.to_container(merged)), ExperimentConfig, "", source)
        cfg = typing.cast(ExperimentConfig, OmegaConf.to_object(merged))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        value = _given(data, key) if key != "?" else None
        raise ConfigError(
            f"Config key '{key}' (in {source}) expects {_expected_type(key)}, got "
            f"{type(value).__name__} {value!r}. Fix the value in the YAML file or the key=value override."
        ) from e
    check_rules(cfg, source)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load an experiment YAML (following ``base:``), apply ``key=value`` overrides and validate."""
    data = _read_yaml(Path(path))
    over = _move_renamed_keys(_parse_overrides(list(overrides or [])), "command-line overrides")
    if over:
        _check_keys(over, ExperimentConfig, "", "command-line overrides")
    source = f"{path} with command-line overrides" if over else str(path)
    return config_from_dict(_deep_merge(data, over), source=source)
