"""Valid ranges of numeric config keys, declared next to the fields they constrain, and the choices of
``Literal`` keys.

``lr: float = ranged(5e-5, gt=0)`` is a dataclass field whose metadata holds a :class:`Range`;
``dskd.config.loading`` checks every such range when a config loads (:func:`check_value`), and
``dskd.config.docs`` prints it. A config section that is also built in code checks its own fields
(ranges and choices) in ``__post_init__`` with :func:`check_fields`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from dskd.core.errors import ConfigError

RANGE = "range"
"""Key of the :class:`Range` in a dataclass field's metadata."""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """An interval (either end may be open or absent) plus sentinel values allowed outside it."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple[float, ...] = ()

    def __contains__(self, value: float) -> bool:
        if math.isnan(value):  # NaN fails no comparison: without this it would lie in every range
            return False
        if value in self.also:
            return True
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{left}{_num(self.low)}, {_num(self.high)}{right}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {_num(self.high)}"
        else:
            text = "any"
        return " or ".join([text, *(_num(a) for a in self.also)])


def ranged(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    also: tuple[float, ...] = (),
) -> Any:
    """A dataclass field with ``default`` whose value must lie in the given range (or be in ``also``).

    None passes for optional fields (their type allows it); give at most one of ``ge``/``gt`` and
    of ``le``/``lt``.
    """
    if (ge is not None and gt is not None) or (le is not None and lt is not None):
        raise ValueError("give at most one lower bound (ge or gt) and one upper bound (le or lt)")
    rng = Range(
        low=gt if gt is not None else ge,
        high=lt if lt is not None else le,
        low_open=gt is not None,
        high_open=lt is not None,
        also=also,
    )
    return dataclasses.field(default=default, metadata={RANGE: rng})


def range_of(f: dataclasses.Field) -> Range | None:
    """The :class:`Range` declared for a dataclass field, if any."""
    return f.metadata.get(RANGE)


def check_value(key: str, value: Any, f: dataclasses.Field, source: str | None = None) -> None:
    """Raise :class:`ConfigError` naming ``key``, ``value`` and the range when ``value`` lies outside
    the range declared for ``f`` (None and fields without a range pass), or is not finite: no key
    accepts NaN or infinity (a NaN passes every comparison, so a range alone would let it through)."""
    rng = range_of(f)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    where = f" (in {source})" if source else ""
    if number and not math.isfinite(value):
        raise ConfigError(f"Config key '{key}'{where} is {value!r}; it takes a finite number.")
    if rng is not None and number and value not in rng:
        raise ConfigError(f"Config key '{key}'{where} is {value!r}, outside its valid range: {rng}.")


def choices(tp: Any) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` annotation (also inside ``X | None``); () for other types."""
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(c for arg in typing.get_args(tp) for c in choices(arg))
    return ()


def check_choice(key: str, value: Any, tp: Any, source: str | None = None) -> None:
    """Refuse a value outside the choices of a ``Literal`` key of type ``tp``, naming the closest one
    (None and unresolved ``${...}`` interpolations pass)."""
    allowed = choices(tp)
    if value is None or value in allowed or (isinstance(value, str) and "${" in value):
        return
    close = difflib.get_close_matches(str(value), [str(c) for c in allowed], n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    where = f" (in {source})" if source else ""
    raise ConfigError(f"Config key '{key}'{where} is {value!r}, not one of: {', '.join(allowed)}.{hint}")


def check_fields(obj: Any, prefix: str) -> None:
    """:func:`check_value` and, for ``Literal`` keys, :func:`check_choice` for every field of the
    dataclass instance ``obj`` (keys ``prefix + name``)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        check_value(key, value, f)
        if choices(hints[f.name]):
            check_choice(key, value, hints[f.name])
