"""Fault suite of config values: every numeric key out of range and every choice key mistyped fails at load.

The keys are walked from the schema, so a numeric key added without a declared range, or a choice
key whose mistyped value loads, fails here.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from dskd.config.loading import config_from_dict, load_config
from dskd.config.ranges import range_of
from dskd.config.schema import ExperimentConfig
from dskd.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "experiments/smoke/dskd.yaml"


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One leaf key of the schema: its dotted name, the dataclass field and a way to set it in a dict."""

    key: str
    field: dataclasses.Field
    type: Any
    path: tuple[str, ...]
    """Dict keys down to the field; a list of dataclasses is entered as its one (default) element."""
    in_list: tuple[bool, ...]

    def config(self, value: Any) -> dict[str, Any]:
        node: Any = value
        for part, listed in reversed(list(zip(self.path, self.in_list, strict=True))):
            node = [node] if listed else node
            node = {part: node}
        return node


def leaves(cls: type = ExperimentConfig, prefix: str = "", path=(), in_list=()) -> list[Leaf]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        sub = next((t for t in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(t)), None)
        if sub is not None:
            listed = typing.get_origin(tp) is list
            out += leaves(
                sub, f"{prefix}{f.name}{'[0]' if listed else ''}.", (*path, f.name), (*in_list, listed)
            )
        else:
            out.append(Leaf(f"{prefix}{f.name}", f, tp, (*path, f.name), (*in_list, False)))
    return out


def _numeric(tp: Any) -> bool:
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return any(a in (int, float) for a in args)


def _literal(tp: Any) -> tuple[str, ...]:
    for t in (tp, *typing.get_args(tp)):
        if typing.get_origin(t) is typing.Literal:
            return typing.get_args(t)
    return ()


NUMERIC = [leaf for leaf in leaves() if _numeric(leaf.type)]
CHOICES = [leaf for leaf in leaves() if _literal(leaf.type)]


def test_the_walk_finds_the_keys_it_must():
    assert {"optim.lr", "data.sense_fraction", "data.train[0].max_records", "trainer.max_steps"} <= {
        leaf.key for leaf in NUMERIC
    }
    assert {"method", "trainer.strategy", "senses.keying", "data.train[0].kind"} <= {
        leaf.key for leaf in CHOICES
    }
    assert "logging.wandb" not in {leaf.key for leaf in NUMERIC}  # bool is not numeric here


def _out_of_range(leaf: Leaf) -> list[Any]:
    rng = range_of(leaf.field)
    assert rng is not None, (
        f"numeric config key {leaf.key} has no declared range (use dskd.config.ranges.ranged)"
    )
    bad = [rng.low - 1] if rng.low is not None else []
    bad += [rng.high + 1] if rng.high is not None else []
    return bad


@pytest.mark.parametrize("leaf", NUMERIC, ids=lambda leaf: leaf.key)
def test_every_numeric_key_out_of_range_fails_at_load(leaf):
    for value in _out_of_range(leaf):
        with pytest.raises(ConfigError) as e:
            config_from_dict(leaf.config(value))
        msg = str(e.value)
        assert f"'{leaf.key}'" in msg and repr(value) in msg and "valid range" in msg
        assert "\n" not in msg


@pytest.mark.parametrize("leaf", CHOICES, ids=lambda leaf: leaf.key)
def test_every_choice_key_mistyped_names_the_closest_value(leaf):
    choices = _literal(leaf.type)
    meant = choices[-1]
    with pytest.raises(ConfigError) as e:
        config_from_dict(leaf.config(meant + "x"))
    msg = str(e.value)
    assert f"'{leaf.key}'" in msg and f"Did you mean '{meant}'?" in msg
    assert all(c in msg for c in choices)


@pytest.mark.parametrize(
    ("override", "expected"),
    [  # hand-picked from the bug reports, with the range written out
        ("optim.lr=-1", "with command-line overrides) is -1.0, outside its valid range: > 0."),
        ("optim.lr=0", "valid range: > 0"),
        ("data.sense_fraction=1.5", "valid range: [0, 1]"),
        ("trainer.log_every_n_steps=0", "valid range: >= 1"),
        ("senses.k=0", "'senses.k'"),
        ("senses.kmeans_iters=0", "'senses.kmeans_iters'"),
        ("loss.sense.margin=-0.5", "'loss.sense.margin'"),
        ("loss.kd.alpha=-1", "'loss.kd.alpha'"),
        ("loss.sense.weight=-2", "'loss.sense.weight'"),
        ("trainer.checkpoint_every_n_steps=0", "'trainer.checkpoint_every_n_steps'"),
        ("trainer.max_steps=0", "valid range: >= 1 or -1"),
        ("loss.kd.tau=0", "'loss.kd.tau' (in"),
        ("loss.kd.skew=1", "valid range: [0, 1)"),
        ("seed=-1", "valid range: [0, 4294967295]"),
    ],
)
def test_reported_bad_values_fail_at_load(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, [override])
    assert expected in str(e.value)


def test_sentinels_and_bounds_themselves_load():
    cfg = load_config(
        SMOKE, ["trainer.max_steps=-1", "data.sense_fraction=1", "optim.warmup_ratio=0", "loss.kd.skew=0"]
    )
    assert (cfg.trainer.max_steps, cfg.data.sense_fraction, cfg.loss.kd.skew) == (-1, 1.0, 0.0)


def test_interpolated_choice_names_the_choices():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"name": "lineer", "student": {"projection": "${name}"}})
    assert "'student.projection'" in str(e.value) and "one of: auto, linear, none" in str(e.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.strategy=fsdp", "trainer.accelerator=cpu"], "runs on CUDA GPUs only"),
        (["trainer.strategy=deepspeed_stage_2", "trainer.accelerator=cpu"], "runs on CUDA GPUs only"),
        (["trainer.strategy=deepspeed_stage_3", "trainer.nan_policy=skip"], "nan_policy=skip does not work"),
        (["trainer.precision=16-mixed", "trainer.accelerator=cpu"], "16-mixed is not supported"),
        (["trainer.accelerator=cpu", "trainer.devices=-1"], "only a process count on the CPU"),
        (["trainer.accelerator=cpu", 'trainer.devices="[0, 1]"'], "only a process count on the CPU"),
        (["trainer.accelerator=cpu", "senses.device=cuda"], "senses.device=cuda puts the sense dictionary"),
        (["student.trainable_top_layers=0"], "without a trainable parameter"),
        (["trainer.devices=two"], "trainer.devices='two' is not auto"),
        (["trainer.devices=0"], "trainer.devices='0' is not auto"),
        (['trainer.devices="[0, x]"'], "list of device"),
        (["teacher.mode=cached", "loss.kd.chunk_size=64"], "does not combine with teacher.mode=cached"),
        (
            ["teacher.mode=cached", "loss.kd.divergence=reverse_kl"],
            "reverse_kl cannot be estimated without bias",
        ),
        (["teacher.mode=cached", "loss.kd.divergence=js"], "cache.kd_format=topk"),
        (
            [
                "teacher.mode=online",  # the smoke preset trains from the tiny teacher cache
                "trainer.strategy=deepspeed_stage_3",
                "loss.kd.chunk_size=64",
                "student.kind=hf",
                "student.model=m",
            ],
            "needs a frozen student LM head",
        ),
        (
            [
                "teacher.mode=online",
                "trainer.strategy=fsdp",
                "trainer.accelerator=gpu",
                "data.on_policy.fraction=0.1",
            ],
            "student generates outside its training forward",
        ),
        (
            ["teacher.mode=online", "trainer.strategy=deepspeed_stage_3", "data.on_policy.fraction=1"],
            "strategy=deepspeed_stage_3: the student generates",
        ),
        (["student.kind=hf"], "student.kind=hf needs student.model"),
        (["student.num_layers=2", "student.trainable_top_layers=3"], "exceeds student.num_layers=2"),
        (["data.train=[{kind: shakespeare, subset_seed: 0}]"], r"\(shakespeare\) sets subset_seed"),
        (["data.val=[{kind: shakespeare, reservoir_cap: 100}]"], "only senses.sources read"),
        (["senses.sources=[{kind: shakespeare, teacher_new_tokens: 1}]"], "only data.train and data.val"),
    ],
)
def test_combinations_known_to_fail_are_refused(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(SMOKE, overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.nan_policy=skip"],
        ["trainer.precision=bf16-mixed", "trainer.accelerator=cpu"],
        ["trainer.devices=-1"],
        ["trainer.accelerator=cpu", "trainer.devices=2", "senses.device=pinned"],
        ["trainer.accelerator=gpu", "senses.device=cuda"],
        ["student.trainable_top_layers=0", "student.projection=linear"],  # smoke is dskd: a learned map
        ["trainer.devices=8"],
        ['trainer.devices="[0, 2]"'],
        ["trainer.precision=16-mixed", "trainer.accelerator=gpu"],
        ["trainer.strategy=fsdp", "trainer.accelerator=gpu", "trainer.nan_policy=skip"],
        ["teacher.mode=online", "trainer.strategy=deepspeed_stage_3", "loss.kd.chunk_size=64"],  # frozen head
        ["teacher.mode=online", "trainer.strategy=deepspeed_stage_2", "data.on_policy.fraction=0.5"],
        ["teacher.mode=cached", "data.on_policy.fraction=0"],
        ["teacher.mode=cached", "data.on_policy.fraction=0.5"],  # the live teacher scores on-policy batches
        ["student.kind=hf", "student.model=m", "student.num_layers=1", "student.trainable_top_layers=2"],
        ["data.train=[{kind: shakespeare, max_records: 5, subset_seed: 0, teacher_new_tokens: 10}]"],
        ["senses.sources=[{kind: shakespeare, max_records: 5, subset_seed: 0, reservoir_cap: 100}]"],
        ["teacher.mode=cached", "cache.kd_format=topk", "loss.kd.divergence=reverse_kl"],
        ["teacher.mode=online", "loss.kd.divergence=js"],  # the default sampled targets matter only cached
    ],
)
def test_neighbouring_combinations_still_load(overrides):
    load_config(SMOKE, overrides)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_empty_file_is_refused(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "3\n"])
def test_other_top_level_shapes_are_refused(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", str(SMOKE), "optim.lr=-1"], "valid range: > 0"),
        (["train", str(SMOKE), "--no-export", "trainer.strategy=dpp"], "Did you mean 'ddp'?"),
        (
            ["slurm", "submit", str(SMOKE), "method=dksd", "--nodes", "1", "--gpus-per-node", "1"],
            "not one of: kd, dskd",
        ),
    ],
)
def test_a_bad_value_fails_before_torch_is_imported(argv, message):
    code = f"import sys\nfrom dskd.cli import main\nrc = main({argv!r})\nprint(rc, 'torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "False"]  # no model can have loaded without torch
    assert message in out.stderr
