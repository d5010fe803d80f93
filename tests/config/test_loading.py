"""Config loading: base chains, overrides, unknown keys, wrong types, saving."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dskd.config.loading import config_from_dict, load_config
from dskd.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_resolve_interpolations():
    cfg = config_from_dict({"preset": "abc"})
    assert cfg.artifacts_dir == "artifacts/abc"
    assert cfg.lexicon.output_dir == "artifacts/abc/lexicon"
    assert cfg.loss.kd.tau == 2.0 and cfg.loss.kd.alpha == 0.7 and cfg.loss.sense.kappa == 5


def test_base_chain_and_later_file_wins(tmp_path):
    write(tmp_path / "root.yaml", "seed: 1\nloss:\n  kd:\n    tau: 3.0\n    alpha: 0.5\n")
    write(tmp_path / "mid.yaml", "base: root.yaml\nseed: 2\n")
    leaf = write(tmp_path / "leaf.yaml", "base: mid.yaml\nloss:\n  kd:\n    tau: 4.0\n")
    cfg = load_config(leaf)
    assert cfg.seed == 2
    assert cfg.loss.kd.tau == 4.0
    assert cfg.loss.kd.alpha == 0.5  # deep merge keeps sibling keys of the base


def test_overrides_apply_after_files_with_yaml_types(tmp_path):
    leaf = write(tmp_path / "a.yaml", "trainer:\n  max_steps: 10\n")
    cfg = load_config(leaf, ["trainer.max_steps=3", "loss.kd.chunk_size=null", "logging.tags=[a, b]"])
    assert cfg.trainer.max_steps == 3
    assert cfg.loss.kd.chunk_size is None
    assert cfg.logging.tags == ["a", "b"]


def test_tiny_presets_differ_only_in_method_and_name():
    kd = load_config(ROOT / "experiments/tiny/kd.yaml")
    dskd = load_config(ROOT / "experiments/tiny/dskd.yaml")
    assert (kd.method, dskd.method) == ("kd", "dskd")
    kd.method, kd.name = dskd.method, dskd.name
    assert kd == dskd


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"trainer": {"max_stepz": 3}}, "Did you mean 'trainer.max_steps'"),
        ({"lexcon": {}}, "Did you mean 'lexicon'"),
        ({"loss": {"sense": {"kapa": 3}}}, "Did you mean 'loss.sense.kappa'"),
        ({"optim": {"learning_rate": 1e-4}}, "Did you mean 'optim.lr'"),  # was optim.warmup_ratio
        ({"optim": {"wd": 0.1}}, "Did you mean 'optim.weight_decay'"),
    ],
)
def test_unknown_key_names_closest(data, expected):
    with pytest.raises(ConfigError, match=expected):
        config_from_dict(data)


def test_unknown_key_in_override(tmp_path):
    leaf = write(tmp_path / "a.yaml", "seed: 0\n")
    with pytest.raises(ConfigError, match="command-line overrides.*Did you mean 'trainer.max_steps'"):
        load_config(leaf, ["trainer.max_step=3"])


def test_a_dotted_yaml_key_says_to_nest_it_instead_of_suggesting_itself(tmp_path):
    leaf = write(tmp_path / "a.yaml", "loss.sense.kappa: 3\n")
    with pytest.raises(
        ConfigError
    ) as e:  # before: "Unknown config key 'loss.sense.kappa' ... Did you mean 'loss.sense.kappa'?"
        load_config(leaf)
    assert "is written with dots" in str(e.value) and "`loss: {sense: {kappa: ...}}`" in str(e.value)
    assert "Did you mean" not in str(e.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "data.train={kind: text, path: x}",
            "'data.train' (in command-line overrides) expects a list of SourceConfig",
        ),
        (
            "lexicon.sources={kind: wordnet}",
            "'lexicon.sources' (in command-line overrides) expects a list of",
        ),
        ("data.on_policy=[1]", "'data.on_policy' (in command-line overrides) expects a mapping of its keys"),
    ],
)
def test_a_mapping_for_a_list_of_sections_or_a_list_for_a_section_names_the_key(tmp_path, override, expected):
    leaf = write(tmp_path / "a.yaml", "seed: 0\n")
    with pytest.raises(ConfigError, match=re.escape(expected)):  # before: omegaconf's TypeError, no key
        load_config(leaf, [override])


def test_wrong_type_names_key_expected_and_given():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"trainer": {"max_steps": "abc"}})
    msg = str(e.value)
    assert "trainer.max_steps" in msg and "expects int" in msg and "got str 'abc'" in msg


def test_wrong_type_in_list_of_sources():
    with pytest.raises(ConfigError, match="data.train"):
        config_from_dict({"data": {"train": [{"kind": "text", "max_records": "many"}]}})


def test_missing_file_and_bad_yaml_and_cycle(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path / "bad.yaml", "a: [1, 2\n"))
    write(tmp_path / "x.yaml", "base: y.yaml\n")
    write(tmp_path / "y.yaml", "base: x.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "x.yaml")


def test_malformed_override(tmp_path):
    leaf = write(tmp_path / "a.yaml", "seed: 0\n")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(leaf, ["seed"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "experiments/tiny/dskd.yaml", ["seed=7"])
    path = cfg.save(tmp_path)
    assert load_config(path) == cfg


def test_exponent_without_dot_is_a_float():
    cfg = load_config(ROOT / "experiments/tiny/dskd.yaml", ["optim.lr=2e-5"])
    assert cfg.optim.lr == pytest.approx(2e-5)
    assert isinstance(cfg.optim.lr, float)


def test_number_for_a_string_key_is_kept_as_text(tmp_path):
    leaf = write(tmp_path / "a.yaml", "seed: 0\n")
    assert load_config(leaf, ["trainer.devices=2"]).trainer.devices == "2"
    with pytest.raises(ConfigError, match="trainer.devices"):
        load_config(leaf, ["trainer.devices=true"])


def test_a_renamed_key_is_read_under_its_new_name_with_a_message(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(
        "family: mine\nartifacts_dir: art/${family}\nteacher:\n  cache_targets: topk\n  cache_top_k: 16\n"
    )
    with pytest.warns(FutureWarning, match="'teacher.cache_targets' is now 'cache.kd_format'"):
        cfg = load_config(path, ["data.targets_cache_dir=conts"])
    assert (cfg.preset, cfg.artifacts_dir) == ("mine", "art/mine")
    assert (cfg.cache.kd_format, cfg.cache.top_k, cfg.data.continuations_dir) == ("topk", 16, "conts")


def test_a_key_set_under_both_names_is_refused(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("family: a\npreset: b\n")
    with pytest.raises(ConfigError, match="both 'family' and its new name 'preset'"):
        load_config(path)
