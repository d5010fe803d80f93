"""`dskd export`: the teacher's generation config and chat template, the model card; foreign output
folders, the run folder, files that are no checkpoint, a full disk."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoTokenizer, GenerationConfig

from dskd.cli import main
from dskd.config.loading import config_from_dict
from dskd.core.errors import DSKDError
from dskd.models.card import render_card
from dskd.models.export import export_checkpoint
from dskd.testing.fixtures import llama_config, word_tokenizer
from dskd.training.run import train

from ..training.tinyrun import make_model_dir, make_tokenizer, random_batches, tiny_config

CONFIG = config_from_dict({"name": "stub"}).to_yaml()


def make_checkpoint(root, hidden: int = 32):
    """``root/seed-0/checkpoints/last.ckpt`` in the layout `dskd train` writes (with ``tokenizer/``)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(64, hidden, 2))
    run = root / "seed-0"
    word_tokenizer(64).save_pretrained(run / "tokenizer")
    (run / "checkpoints").mkdir(parents=True)
    ckpt = {
        "dskd": {
            "student_config": model.config.to_dict(),
            "tokenizer": str(run / "tokenizer"),
            "config": CONFIG,
        },
        "state_dict": {f"student.{k}": v for k, v in model.state_dict().items()},
        "global_step": 3,
    }
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    return run / "checkpoints" / "last.ckpt", model


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err  # may hold progress bars of transformers before the error
    (line,) = [line for line in err.splitlines() if "dskd: error: " in line]
    assert line.startswith("dskd: error: ") and err.endswith(line + "\n") and "Traceback" not in err, err
    return line


def test_a_folder_of_user_files_is_refused_unless_overwrite(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    ckpt, model = make_checkpoint(tmp_path / "run")
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    assert main(["export", str(ckpt), str(out)]) == 2
    assert "holds files not written by dskd" in one_line_error(capsys)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    assert main(["export", str(ckpt), str(out), "--overwrite"]) == 0
    assert not (out / "thesis.tex").exists()
    back = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(back.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert main(["export", str(ckpt), str(out)]) == 0  # an earlier export is replaced without asking


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_exporting_over_the_run_folder_is_refused(tmp_path, capsys, extra):
    ckpt, _ = make_checkpoint(tmp_path / "run")
    run = ckpt.parent.parent
    assert main(["export", str(ckpt), str(run), *extra]) == 2
    assert "holds an input of this export stage" in one_line_error(capsys)
    assert ckpt.is_file() and (run / "tokenizer").is_dir()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"just some notes\n", "is not a readable PyTorch checkpoint ("),
        (b"", "is not a readable PyTorch checkpoint"),
        (b"PK\x03\x04" + bytes(60), "is not a readable PyTorch checkpoint"),  # a damaged zip
        (None, "was not written by `dskd train`"),  # a tensor, not a checkpoint dict
    ],
    ids=["text", "empty", "zip", "tensor"],
)
def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "model.ckpt"
    if content is None:
        torch.save(torch.zeros(3), path)
    else:
        path.write_bytes(content)
    assert main(["export", str(path), str(tmp_path / "out")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_no_deepspeed_checkpoint_is_one_line(tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    assert main(["export", str(folder), str(tmp_path / "out")]) == 2  # before: DeepSpeed's error, 96 s later
    assert f"{folder} is a folder but not a DeepSpeed checkpoint (it has no 'latest' file)" in one_line_error(
        capsys
    )
    assert not (tmp_path / "out").exists()


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, small_disk):
    ckpt, _ = make_checkpoint(tmp_path / "run", hidden=256)  # ~5 MB of weights for a 1 MiB disk
    assert main(["export", str(ckpt), str(small_disk / "export")]) == 2
    err = one_line_error(capsys)
    assert f"No space left on the device while writing {small_disk / 'export'}" in err and "MiB free" in err
    assert list(small_disk.iterdir()) == []


TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"


def _instruct_teacher(path):
    """A stand-in for an instruct teacher: two eos ids, sampling defaults and a chat template."""
    make_model_dir(path)
    GenerationConfig(
        bos_token_id=0, eos_token_id=[2, 0], do_sample=True, temperature=0.6, top_p=0.9
    ).save_pretrained(path)
    tok = make_tokenizer()
    tok.chat_template = TEMPLATE
    tok.save_pretrained(path)
    return path


def test_export_keeps_the_teachers_generation_config_and_chat_template_and_has_a_card(tmp_path):
    teacher = _instruct_teacher(tmp_path / "teacher")
    cfg = tiny_config(tmp_path, teacher, "kd", {"trainer.max_steps": 1})
    out = train(cfg, datamodule=random_batches(n=2), export=False)
    export = export_checkpoint(f"{out['checkpoint_dir']}/last.ckpt", tmp_path / "export")
    gen = GenerationConfig.from_pretrained(export)
    assert gen.eos_token_id == [2, 0] and gen.do_sample and (gen.temperature, gen.top_p) == (0.6, 0.9)
    assert AutoTokenizer.from_pretrained(export).chat_template == TEMPLATE
    exported = json.loads((export / "tokenizer_config.json").read_text())
    assert exported == json.loads((teacher / "tokenizer_config.json").read_text())
    assert (
        "local_files_only" not in exported and "is_local" not in exported
    )  # the loader's, not the tokenizer's

    card = ModelCard.load(export / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.base_model is None  # a local teacher folder is no hub id
    assert "- **Method**: KD" in card.text and "max_steps 1" in card.text
    assert json.loads((export / "export_meta.json").read_text())["experiment_config"].strip() in card.text
    assert "Not evaluated yet" in card.text
    table = "| model | wic accuracy |\n|---|---|\n| KD | 0.500 |"
    assert table in render_card(export, table) and "Not evaluated yet" not in render_card(export, table)


def test_a_hub_teacher_is_the_base_model_and_an_asset_teacher_the_repo_it_copies(tmp_path):
    from dskd.models.card import base_model

    assert base_model("meta-llama/Meta-Llama-3-8B-Instruct") == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert base_model("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model(str(tmp_path)) is None


def _card_of(export, teacher: str, results=None):
    """The card of ``export`` had it been trained from ``teacher`` on the paper's data (scored: ``results``),
    loaded back by huggingface_hub."""
    meta = json.loads((export / "export_meta.json").read_text())
    cfg = config_from_dict({"name": "stub", "teacher": {"model": teacher}})
    meta["experiment_config"] = cfg.to_yaml()
    meta["datasets"] = ["allenai/ai2_arc", "wikimedia/wikipedia"]
    (export / "export_meta.json").write_text(json.dumps(meta))
    return ModelCard(render_card(export, "| table |", results))


def test_the_card_front_matter_validates_with_the_hub_library_and_carries_licence_data_and_scores(tmp_path):
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard_data import model_index_to_eval_results

    ckpt, _ = make_checkpoint(tmp_path / "run")
    export = export_checkpoint(ckpt, tmp_path / "export")
    results = [
        {"benchmark": "wic", "metric": "acc", "value": 0.52},
        {"benchmark": "heldout", "metric": "kl", "value": 3.9},
    ]
    card = _card_of(export, "smollm2-135m-instruct", results)
    data = card.data.to_dict()
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (
        data["base_model_relation"] == "finetune"
    )  # the hub's relations: adapter, merge, quantized, finetune
    assert data["license"] == "apache-2.0" and data["datasets"] == ["allenai/ai2_arc", "wikimedia/wikipedia"]
    # the model-index parses back into the scores (huggingface_hub drops a malformed one with a warning)
    name, parsed = model_index_to_eval_results(data["model-index"])
    assert name == "stub-seed0"
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in parsed] == [
        ("wic", "acc", 0.52),
        ("heldout", "kl", 3.9),
    ]
    assert ModelCardData(**data).eval_results is not None  # what ModelCard.load builds from the front matter

    llama = _card_of(export, "meta-llama/Meta-Llama-3-8B-Instruct")
    assert llama.data.license == "llama3" and llama.data.license_link.endswith(
        "Meta-Llama-3-8B/blob/main/LICENSE"
    )
    assert "Built with Meta Llama 3" in llama.text and 'begin with "Llama 3"' in llama.text
    assert llama.data.eval_results is None  # not evaluated yet: no model-index

    other = _card_of(export, "someone/unknown-model")
    assert other.data.license is None and "add `license:`" in other.text


def test_a_llama_3_student_is_pushed_only_under_a_name_that_begins_with_llama_3(tmp_path, capsys):
    from dskd.models.card import check_repo_name

    ckpt, _ = make_checkpoint(tmp_path / "run")
    export = export_checkpoint(ckpt, tmp_path / "export")
    (export / "README.md").write_text(str(_card_of(export, "meta-llama/Meta-Llama-3-8B-Instruct")))
    with pytest.raises(DSKDError, match="begin with 'Llama-3'.*push it as e.g. me/Llama-3-student"):
        check_repo_name(export, "me/student")
    check_repo_name(export, "me/llama3-dskd-student")  # case, '-', '_' and spaces aside


def test_push_to_hub_is_opt_in_and_fails_in_one_line_when_the_hub_is_unreachable(tmp_path, capsys):
    ckpt, _ = make_checkpoint(tmp_path / "run")
    assert main(["export", str(ckpt), str(tmp_path / "out"), "--push-to-hub", "someone/student"]) == 2
    line = one_line_error(capsys)  # the tests run with HF_HUB_OFFLINE=1
    assert "Could not push" in line and "someone/student" in line and "OfflineModeIsEnabled" in line
    assert (tmp_path / "out" / "README.md").is_file()  # the export itself is done


def test_a_trainable_only_checkpoint_takes_its_frozen_weights_from_the_teacher(tmp_path, capsys):
    """The frozen keys a trainable-only checkpoint leaves out come from the recorded teacher; a teacher
    without them is a one-line error."""
    from transformers import AutoModelForCausalLM

    ckpt_path, model = make_checkpoint(tmp_path / "run")
    teacher = tmp_path / "teacher"
    model.save_pretrained(teacher)
    ckpt = torch.load(ckpt_path, weights_only=True)
    frozen = sorted(k for k in ckpt["state_dict"] if ".layers.1." not in k)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if k not in frozen}
    ckpt["dskd"]["frozen"] = {"keys": frozen, "teacher": str(teacher), "revision": None, "dtype": "float32"}
    torch.save(ckpt, ckpt_path)
    export_checkpoint(ckpt_path, tmp_path / "out")
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(exported[key], value), key
    ckpt["dskd"]["frozen"]["keys"].append("student.model.layers.7.mlp.up_proj.weight")
    torch.save(ckpt, ckpt_path)
    assert main(["export", str(ckpt_path), str(tmp_path / "out2")]) == 2
    assert "has no weights ['model.layers.7.mlp.up_proj.weight']" in one_line_error(capsys)
