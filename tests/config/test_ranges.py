"""Declared ranges of numeric config keys: membership at the bounds and the text shown to users."""

from __future__ import annotations

import dataclasses

import pytest

from dskd.config.ranges import Range, range_of, ranged


@pytest.mark.parametrize(
    ("kw", "inside", "outside", "text"),
    [
        ({"gt": 0}, [1e-12, 5], [0, -1], "> 0"),
        ({"ge": 1}, [1, 10**9], [0, 0.999], ">= 1"),
        ({"ge": 0, "le": 1}, [0, 0.5, 1], [-0.01, 1.01], "[0, 1]"),
        ({"ge": 0, "lt": 1}, [0, 0.999], [1, -1], "[0, 1)"),
        ({"ge": 1, "also": (-1,)}, [-1, 1, 7], [0, -2], ">= 1 or -1"),
        ({"le": 2.5}, [-3, 2.5], [2.6], "<= 2.5"),
    ],
)
def test_range_bounds_and_text(kw, inside, outside, text):
    @dataclasses.dataclass
    class C:
        x: float = ranged(0.5, **kw)

    rng = range_of(dataclasses.fields(C)[0])
    assert isinstance(rng, Range)
    assert all(v in rng for v in inside)
    assert not any(v in rng for v in outside)
    assert str(rng) == text
    assert C().x == 0.5


def test_two_lower_bounds_are_a_programming_error():
    with pytest.raises(ValueError):
        ranged(1, ge=0, gt=0)


def test_field_without_range():
    @dataclasses.dataclass
    class C:
        x: int = 3

    assert range_of(dataclasses.fields(C)[0]) is None
