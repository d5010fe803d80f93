"""`dskd reproduce`: the smoke preset end to end, stage skipping, one writer per stage (the paper
presets' 2-process rehearsal: test_rehearsal.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path

import pytest

from dskd.cli import main
from dskd.core.errors import ConfigError, DSKDError
from dskd.core.io import read_json, write_json_atomic
from dskd.core.stamps import STAMP, is_current, run_stage, stage_key
from dskd.evaluation.run import discover_models
from dskd.launch.reproduce import _train, preset_configs, training_assets
from tests.training.tinyrun import make_model_dir, tiny_config, write_corpus


def test_run_stage_skips_when_key_matches(tmp_path):
    calls = []
    key = stage_key({"a": 1})
    assert run_stage("x", tmp_path, key, lambda: calls.append(1) or {"v": 1}) == {"v": 1}
    assert is_current(tmp_path, key)
    assert run_stage("x", tmp_path, key, lambda: calls.append(1)) == {"v": 1}
    assert calls == [1]
    run_stage("x", tmp_path, stage_key({"a": 2}), lambda: calls.append(2))
    assert calls == [1, 2]


def test_failed_stage_leaves_no_stamp(tmp_path):
    def boom():
        raise RuntimeError("stage failed")

    with pytest.raises(RuntimeError):
        run_stage("x", tmp_path, "k", boom)
    assert not is_current(tmp_path, "k")


def test_every_preset_loads_with_kd_first_and_shared_data():
    for preset in ("tiny", "smoke", "paper-llama3", "paper-mistral"):
        kd, dskd, *variants = preset_configs(preset, [0], [])
        assert (kd.method, dskd.method) == ("kd", "dskd")
        assert kd.data == dskd.data and kd.seed == dskd.seed and kd.student == dskd.student
        assert [v.label for v in variants] == (["DSKD+", "DSKD+ pull-only"] if preset == "tiny" else [])
    plus, pull = preset_configs("tiny", [0], [])[2:]
    assert plus.method == "dskd" and plus.loss.sense.margin_quantile is None
    assert plus.loss.sense.hinge == "teacher" and plus.loss.sense.pull == "match"
    assert plus.loss.sense.negatives
    assert not plus.loss.sense.own_senses_in_negatives
    assert plus.data.neighbours_with_senses and plus.data.sense_aligned_neighbours
    assert not pull.loss.sense.negatives and pull.name == "tiny-dskd-plus-pull"
    assert pull.loss == dataclasses.replace(
        plus.loss, sense=dataclasses.replace(plus.loss.sense, negatives=False)
    )
    assert pull.data == plus.data and pull.student == plus.student


def test_a_preset_folder_path_runs_that_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert preset_configs("experiments/smoke", [0], []) == preset_configs("smoke", [0], [])
    with pytest.raises(ConfigError, match="needs kd.yaml"):
        preset_configs(str(tmp_path) + "/", [0], [])


def test_unknown_preset_is_a_clean_error(capsys):
    assert main(["reproduce", "--preset", "nope"]) == 2
    assert "Known presets" in capsys.readouterr().err


def test_the_training_assets_of_a_preset_are_named_with_the_key_that_needs_them():
    assert training_assets(preset_configs("tiny", [0, 1], [])) == {
        "smollm2-135m-instruct": "teacher.model",
        "wordnet": "lexicon.sources",
        "wordnet-corpus": "senses.sources",
    }
    shakespeare = preset_configs(
        "smoke", [0], ["data.train=[{kind: shakespeare}]", "teacher.model=/my/teacher"]
    )
    assert training_assets(shakespeare) == {
        "wordnet": "lexicon.sources",
        "wordnet-corpus": "senses.sources",
        "shakespeare": "data.train",
    }


def test_a_training_asset_that_cannot_be_had_stops_reproduce_before_any_stage(tmp_path, home_without, capsys):
    home_without("smollm2-135m-instruct")  # a home without the teacher, and no index to fetch it from
    assert main(["reproduce", "--preset", "smoke", *_overrides(tmp_path)]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()[-1:]
    assert line.startswith(
        "dskd: error: dskd reproduce needs the asset 'smollm2-135m-instruct' (teacher.model)"
    )
    assert "no stage was run" in line and "dskd assets fetch smollm2-135m-instruct --from DIR" in line
    assert "===" not in captured.out and not (tmp_path / "lexicon").exists()
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "runs").exists()


def _overrides(tmp_path):
    return [
        f"artifacts_dir={tmp_path}/artifacts",
        f"runs_dir={tmp_path}/runs",
        f"eval.output_dir={tmp_path}/results",
        f"lexicon.output_dir={tmp_path}/lexicon",
    ]


def _assert_offline_wandb_runs(root):
    """The offline W&B runs hold the results table, the plots and the student, lexicon and dictionary."""
    from dskd.tracking.offline import history, records, run_logs

    (eval_log,) = run_logs(root / "results")
    (row,) = [r for r in history(eval_log) if "eval/results" in r]
    assert row["eval/results"]["_type"] == "table-file" and row["eval/results"]["nrows"] == 3  # 3 models
    assert row["eval/scores"]["_type"] == row["eval/losses"]["_type"] == "image-file"
    scored = {r.artifact.name: r.artifact.digest for r in records(eval_log) if r.HasField("artifact")}
    for name, used in (("smoke-kd", set()), ("smoke-dskd", {"lexicon", "sense-dictionary"})):
        (log,) = run_logs(root / "runs" / name / "seed-0")
        arts = [r.artifact for r in records(log) if r.HasField("artifact")]
        assert {a.type for a in arts if a.use_after_commit} == used
        (student,) = [a for a in arts if not a.use_after_commit]
        assert student.name == f"{name}-seed0"
        assert scored[student.name] == student.digest  # the eval used the very version training logged


def _assert_export_for_the_hub(export):
    """The card's front matter parses with huggingface_hub and carries the lineage, licence and scores; the
    tokenizer files carry no loader kwargs."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(export / "README.md").data
    assert (card.base_model, card.base_model_relation) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "finetune")
    assert card.license == "apache-2.0" and card.eval_results  # the model-index dskd eval wrote
    assert "local_files_only" not in (export / "tokenizer_config.json").read_text()


@pytest.mark.integration
def test_smoke_preset_end_to_end_then_everything_is_skipped(tmp_path, capsys, home_without, monkeypatch):
    assert main(["reproduce", "--preset", "smoke", *_overrides(tmp_path)]) == 0
    results = json.loads((tmp_path / "results" / "results.json").read_text())["results"]
    assert {r["model"] for r in results} == {"teacher", "KD", "DSKD"}
    table = (tmp_path / "results" / "table.md").read_text()
    for row in ("teacher", "KD", "DSKD", "chance"):
        assert row in table
    diffs = table.partition("### Difference to KD (95% paired-bootstrap interval)")[2]
    assert "| DSKD | " in diffs and "| teacher | " in diffs  # paired differences of the trained students
    assert (tmp_path / "results" / "scores.png").stat().st_size > 1000
    assert (tmp_path / "results" / "losses.png").stat().st_size > 1000
    assert (tmp_path / "results" / "diagnostics.png").stat().st_size > 1000  # lr, grad_norm, ...
    assert struct.unpack(">II", (tmp_path / "results" / "losses.png").read_bytes()[16:24])[0] <= 2400
    for name in ("smoke-kd", "smoke-dskd"):
        assert (tmp_path / "runs" / name / "seed-0" / "export" / "config.json").is_file()
        _assert_export_for_the_hub(tmp_path / "runs" / name / "seed-0" / "export")
    cache = json.loads((tmp_path / "artifacts" / "teacher_cache" / "meta.json").read_text())
    assert cache["targets"] == "sampled" and cache["hidden_positions"] == "sense"  # the preset trains cached
    _assert_offline_wandb_runs(tmp_path)
    assert "[train] step 8/8 (100%) | loss " in capsys.readouterr().out  # plain progress lines off a TTY
    assert main(["reproduce", "--preset", "smoke", *_overrides(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("up to date") == 6  # lexicon, senses, teacher cache, 2 trainings, eval
    assert "running" not in out
    _unavailable_eval_asset_then_back(tmp_path, capsys, home_without, monkeypatch)


def _unavailable_eval_asset_then_back(tmp_path, capsys, home_without, monkeypatch):
    """Without the analogies asset the eval stage leaves out its task (exit 3, nothing else lost); the next
    run evaluates again although its key is unchanged, and with the asset back completes the table."""
    home = os.environ.get("DSKD_HOME")
    home_without("analogies")
    args = ["reproduce", "--preset", "smoke", *_overrides(tmp_path), "eval.max_items=2"]
    assert main(args) == 3
    captured = capsys.readouterr()
    assert captured.out.count("up to date") == 5 and "=== eval: running" in captured.out
    assert "[eval] analogy: unavailable: " in captured.err and "exit status 3" in captured.err
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert list(results["unavailable"]) == ["analogy"]
    assert {(r["model"], r["benchmark"]) for r in results["results"]} == {
        (m, b) for m in ("teacher", "KD", "DSKD") for b in ("wic", "simlex", "heldout")
    }
    kd_row = next(
        x for x in (tmp_path / "results" / "table.md").read_text().splitlines() if x.startswith("| KD |")
    )
    assert "| unavailable |" in kd_row
    if home:
        monkeypatch.setenv("DSKD_HOME", home)
    else:
        monkeypatch.delenv("DSKD_HOME")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "=== eval: analogy could not be evaluated last time; evaluating again" in out
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["unavailable"] == {} and "analogy" in {r["benchmark"] for r in results["results"]}


def test_only_the_first_process_runs_a_stage_the_others_wait_for_its_stamp(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv("LOCAL_RANK", "1")  # a second process of the node (Lightning's launcher)
    ran = []
    stamped = threading.Timer(0.5, lambda: write_json_atomic(tmp_path / STAMP, {"key": "k", "result": 7}))
    stamped.start()
    assert run_stage("lexicon", tmp_path, "k", lambda: ran.append(1)) == 7
    assert ran == []  # waited for the first process's stamp instead of building


def test_a_collective_stage_runs_everywhere_but_only_the_first_process_stamps(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_stage("train", tmp_path / "a", "k", lambda: {"x": 1}, collective=True) == {"x": 1}
    assert not (tmp_path / "a" / STAMP).exists()
    monkeypatch.setenv("LOCAL_RANK", "0")
    run_stage("train", tmp_path / "a", "k", lambda: {"x": 1}, collective=True)
    assert is_current(tmp_path / "a", "k")


def _evaluate_rank(rank: int, port: int, models: dict[str, str], out_dir: str, log: str) -> None:
    """One process of a 2-process `dskd reproduce` after training: rank 1 holds no exported student
    (only the first process exports) and timed its runs itself."""
    for name in ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"):
        os.environ.pop(name, None)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)
    )
    from dskd.core.devices import launcher_group
    from dskd.launch.reproduce import _evaluate
    from dskd.models.shared import TeacherHolder
    from tests.evaluation.test_sharded import _config

    summaries = [{"wall_time_s": 1.0 + rank}]
    mine = models if rank == 0 else {n: (p if n == "teacher" else None) for n, p in models.items()}
    with launcher_group() as together:
        records, unavailable = _evaluate(
            _config(models, out_dir), mine, summaries, False, TeacherHolder(), together
        )
    Path(f"{log}-{rank}.json").write_text(json.dumps({"records": records, "together": together}))


@pytest.mark.integration  # the Shakespeare asset and the SmolLM2 tokenizer
def test_reproduce_evaluates_in_every_process_what_one_process_evaluates(tmp_path, smollm2_dir):
    import socket

    import torch.multiprocessing as mp

    from dskd.launch.reproduce import _evaluate
    from dskd.models.shared import TeacherHolder
    from tests.evaluation.test_sharded import _config, _models

    models = _models(tmp_path, smollm2_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = str(tmp_path / "rank")
    mp.start_processes(
        _evaluate_rank, args=(port, models, str(tmp_path / "two"), log), nprocs=2, start_method="spawn"
    )
    ranks = [json.loads(Path(f"{log}-{r}.json").read_text()) for r in (0, 1)]
    assert [r["together"] for r in ranks] == [True, True]
    one, _ = _evaluate(
        _config(models, tmp_path / "one"), models, [{"wall_time_s": 1.0}], False, TeacherHolder(), False
    )
    two = json.loads((tmp_path / "two" / "results.json").read_text())["results"]
    assert ranks[0]["records"] == ranks[1]["records"] == two
    assert [(r["model"], r["metric"], r["path"]) for r in two] == [
        (r["model"], r["metric"], r["path"]) for r in one
    ]
    for a, b in zip(one, two):
        assert b["value"] == pytest.approx(a["value"], rel=1e-6) and b["items"] == pytest.approx(a["items"])
    first_key = stage_key(_config(models, tmp_path / "two").eval, models, [1.0])  # rank 0's models, times
    assert is_current(tmp_path / "two", first_key)


def test_a_forced_collective_stage_runs_in_every_process(tmp_path, monkeypatch):
    write_json_atomic(tmp_path / STAMP, {"key": "k", "result": 7})
    monkeypatch.setenv("LOCAL_RANK", "1")  # under torchrun with --force: rank 0 rebuilds, so must rank 1
    assert run_stage("cache", tmp_path, "k", lambda: {"x": 1}, force=True, collective=True) == {"x": 1}
    assert run_stage("lexicon", tmp_path, "k", lambda: {"x": 1}, force=True) == 7  # rank 0's stamp


def _tiny_kd(tmp_path, teacher, over=None):
    """A KD run of 2 steps on a small text corpus, trained with the online teacher."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    data = {"data.train": [{"kind": "text", "path": str(corpus)}], "data.seq_len": 8, "data.batch_size": 2}
    return tiny_config(tmp_path, teacher, "kd", {**data, "trainer.max_steps": 2, **(over or {})})


def test_reproduce_sets_a_run_of_another_config_aside_with_every_file_in_it(tmp_path, capsys):
    teacher = make_model_dir(tmp_path / "teacher")
    first = _train(_tiny_kd(tmp_path, teacher), None, None, False)
    run = Path(first["run_dir"])
    (run / "NOTES.txt").write_text("my notes")
    kept = {p.relative_to(run) for p in run.rglob("*")}
    second = _train(_tiny_kd(tmp_path, teacher, {"optim.lr": 2e-3}), None, None, False)
    (aside,) = run.parent.glob("seed-0.old-*")  # before: the folder was deleted, NOTES.txt with it
    assert aside.name == f"seed-0.old-{read_json(aside / STAMP)['key']}"
    assert {p.relative_to(aside) for p in aside.rglob("*")} == kept
    assert (aside / "NOTES.txt").read_text() == "my notes"
    assert f"holds a finished run of another config; moved to {aside}" in capsys.readouterr().out
    assert second["run_dir"] == str(run) and not (run / "NOTES.txt").exists()
    assert discover_models("t", str(tmp_path / "runs")) == {"teacher": "t", "KD@0": second["export_dir"]}


def test_reproduce_refuses_a_run_folder_holding_files_not_written_by_dskd(tmp_path):
    run = tmp_path / "runs" / "tiny-kd" / "seed-0"
    run.mkdir(parents=True)
    write_json_atomic(run / STAMP, {"key": "other"})
    (run / "NOTES.txt").write_text("my notes")
    cfg = _tiny_kd(tmp_path, make_model_dir(tmp_path / "teacher"))
    with pytest.raises(DSKDError, match=rf"The output folder {run} holds files not written by dskd"):
        _train(cfg, None, None, False)
    assert sorted(p.name for p in run.iterdir()) == [STAMP, "NOTES.txt"]
