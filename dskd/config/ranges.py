"""Valid ranges of numeric config keys, declared next to the fields they constrain.

``lr: float = ranged(5e-5, gt=0)`` is a dataclass field whose metadata holds a :class:`Range`;
``dskd.config.loading`` checks every such range when a config loads (:func:`check_value`), and
``dskd.config.docs`` prints it. A config section that is also built in code checks its own fields
in ``__post_init__`` with :func:`check_fields`.
"""

from __future__ import annotations

import dataclasses
import math
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


def check_fields(obj: Any, prefix: str) -> None:
    """:func:`check_value` for every field of the dataclass instance ``obj`` (keys ``prefix + name``)."""
    for f in dataclasses.fields(obj):
        check_value(f"{prefix}{f.name}", getattr(obj, f.name), f)
