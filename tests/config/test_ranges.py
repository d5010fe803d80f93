"""Declared ranges of numeric config keys: membership at the bounds and the text shown to users."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from dskd.config.loading import load_config
from dskd.config.ranges import Range, range_of, ranged
from dskd.core.errors import ConfigError
from dskd.losses.config import KDConfig, SenseLossConfig

PRESET = Path(__file__).resolve().parents[2] / "experiments" / "tiny" / "dskd.yaml"


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


@pytest.mark.parametrize(
    "override",
    [
        "optim.lr=.nan",
        "optim.lr=1e400",
        "loss.kd.alpha=.nan",
        "loss.sense.weight=.nan",
        "optim.grad_clip=.nan",
        "loss.kd.tau=.inf",
        "optim.weight_decay=.inf",
        "data.on_policy.temperature=.nan",
        "loss.kd.tau=-.inf",
    ],
)
def test_a_non_finite_number_is_refused_at_load(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"'{key}' .* is (nan|inf|-inf); it takes a finite number"):
        load_config(PRESET, [override])


def test_nan_and_infinity_lie_outside_every_range():
    assert math.nan not in Range(low=0, high=1)
    assert math.nan not in Range()
    assert math.inf not in Range(low=0, high=1)
    assert math.inf in Range(low=0)  # no upper bound: check_value refuses it as not finite


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: SenseLossConfig(pull="macth"),
            "'loss.sense.pull' is 'macth', not one of: absolute, floor, match. Did you mean 'match'?",
        ),
        (
            lambda: SenseLossConfig(hinge="relative"),
            "'loss.sense.hinge' is 'relative', not one of: absolute, teacher, triplet.",
        ),
        (
            lambda: KDConfig(divergence="forward-kl"),
            "'loss.kd.divergence' is 'forward-kl', not one of: forward_kl,",
        ),
    ],
)
def test_sections_built_in_code_refuse_a_value_outside_a_literal_key_s_choices(build, message):
    """As the loader does for YAML: a config section built in code checks its Literal keys too."""
    with pytest.raises(ConfigError) as e:
        build()
    assert message in str(e.value)


def test_sections_built_in_code_take_every_choice_of_their_literal_keys():
    for pull in ("absolute", "floor", "match"):
        assert SenseLossConfig(pull=pull, hinge="triplet").pull == pull
