"""Output folders: foreign data is never replaced, inputs never wiped, names stay one path component."""

from __future__ import annotations

import json

import pytest

from dskd.core.errors import ConfigError, DSKDError
from dskd.core.outputs import MARKER, artifact_dir, artifact_kind, check_name, check_output, mark_output
from dskd.models.export import export_checkpoint


@pytest.mark.parametrize(
    "name", ["tiny-dskd", "kappa3-weight0.5", "positives2-negativesFalse", "dskd@1", "a"]
)
def test_safe_names_pass(name):
    assert check_name(name, "name") == name


@pytest.mark.parametrize(
    "name",
    ["../..", "..", ".hidden", "a/b", "x$(touch P)", "x`id`", "it's", "a b", "a\nb", "", "-rf", "a" * 129],
)
def test_unsafe_names_are_refused(name):
    with pytest.raises(ConfigError, match="not a safe name"):
        check_name(name, "The run name (name)")


def _user_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    return folder


def test_absent_empty_and_same_kind_folders_are_writable(tmp_path):
    check_output(tmp_path / "absent", "export")
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", "export")
    with artifact_dir(tmp_path / "out", "export") as tmp:
        (tmp / "model.bin").write_text("v1")
    assert artifact_kind(tmp_path / "out") == "export"
    with artifact_dir(tmp_path / "out", "export") as tmp:  # an earlier export is replaced
        (tmp / "model.bin").write_text("v2")
    assert (tmp_path / "out" / "model.bin").read_text() == "v2"
    assert json.loads((tmp_path / "out" / MARKER).read_text())["stage"] == "export"


def test_a_foreign_folder_is_refused_and_left_intact(tmp_path):
    folder = _user_folder(tmp_path)
    with pytest.raises(DSKDError, match="holds files not written by dskd.*--overwrite"):
        with artifact_dir(folder, "export") as tmp:
            (tmp / "model.bin").write_text("x")
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]
    assert not [p for p in tmp_path.iterdir() if p.name != "mine"], "no temporary folder left behind"


def test_an_artifact_of_another_kind_is_refused(tmp_path):
    with artifact_dir(tmp_path / "lexicon", "lexicon") as tmp:
        (tmp / "lexicon.safetensors").write_text("x")
    with pytest.raises(DSKDError, match="holds a dskd lexicon artifact; writing the senses artifact would"):
        check_output(tmp_path / "lexicon", "senses")


def test_overwrite_replaces_a_foreign_folder_but_never_one_holding_an_input(tmp_path):
    folder = _user_folder(tmp_path)
    with pytest.raises(DSKDError, match="holds an input of this export stage"):
        check_output(tmp_path, "export", overwrite=True, inputs=[folder / "thesis.tex"])
    with pytest.raises(DSKDError, match="holds an input"):
        check_output(folder, "export", overwrite=True, inputs=[folder])
    with artifact_dir(folder, "export", overwrite=True, inputs=[tmp_path / "elsewhere.ckpt"]) as tmp:
        (tmp / "model.bin").write_text("x")
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "model.bin"]


def test_overwrite_never_replaces_a_training_run_or_a_folder_holding_one(tmp_path):
    run = tmp_path / "runs" / "other" / "seed-0"
    (run / "checkpoints").mkdir(parents=True)
    mark_output(run, "run")
    (run / "checkpoints" / "last.ckpt").write_text("weights")
    checkpoint = tmp_path / "mine.ckpt"
    checkpoint.write_text("x")
    for folder in (run, run.parent, run.parent.parent):
        with pytest.raises(DSKDError) as e:  # before: --overwrite deleted the other run's checkpoints
            export_checkpoint(checkpoint, folder, overwrite=True)
        assert str(e.value).startswith(
            f"The output folder {folder} holds a training run ({run}); writing the"
        )
        assert "refused even with --overwrite" in str(e.value)
        with pytest.raises(DSKDError, match="holds a training run"):
            check_output(folder, "eval", overwrite=True)
    assert (run / "checkpoints" / "last.ckpt").read_text() == "weights"
    check_output(run, "run")  # a run writes into its own folder


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "out").write_text("notes")
    with pytest.raises(DSKDError, match="is a file, not a folder"):
        check_output(tmp_path / "out", "eval")


@pytest.mark.parametrize(
    "filename, content, kind",
    [
        ("meta.json", {"provenance": {"stage": "lexicon"}}, "lexicon"),
        ("export_meta.json", {"stage": "export"}, "export"),
        ("results.json", {"provenance": {"stage": "eval"}}, "eval"),
        ("meta.json", {"name": "someone else's"}, None),
        ("meta.json", [1, 2], None),
    ],
)
def test_artifacts_written_before_the_marker_are_recognised_by_their_metadata(
    tmp_path, filename, content, kind
):
    (tmp_path / filename).write_text(json.dumps(content))
    assert artifact_kind(tmp_path) == kind


def test_a_run_folder_written_before_the_marker_is_recognised(tmp_path):
    (tmp_path / "config.yaml").write_text("name: x\n")
    (tmp_path / "checkpoints").mkdir()
    assert artifact_kind(tmp_path) == "run"
    check_output(tmp_path, "run")


def test_a_folder_holding_only_temporaries_of_dskd_counts_as_empty(tmp_path):
    (tmp_path / f".{MARKER}.x1y2.tmp").write_text("")  # another process is writing its marker
    (tmp_path / ".export.a1b2.tmp").mkdir()
    check_output(tmp_path, "run")
    (tmp_path / ".bashrc").write_text("")
    with pytest.raises(DSKDError, match="holds files not written by dskd"):
        check_output(tmp_path, "run")
