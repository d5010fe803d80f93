"""`dskd export`: foreign output folders, the run folder, files that are no checkpoint, a full disk."""

from __future__ import annotations

import pytest
import torch

from dskd.cli import main
from dskd.testing import llama_config, word_tokenizer


def make_checkpoint(root, hidden: int = 32):
    """``root/seed-0/checkpoints/last.ckpt`` in the layout `dskd train` writes (with ``tokenizer/``)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(64, hidden, 2))
    run = root / "seed-0"
    word_tokenizer(64).save_pretrained(run / "tokenizer")
    (run / "checkpoints").mkdir(parents=True)
    ckpt = {
        "dskd": {"student_config": model.config.to_dict(), "tokenizer": str(run / "tokenizer"), "config": {}},
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
        (b"just some notes\n", "is not a readable PyTorch checkpoint (UnpicklingError"),
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


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, small_disk):
    ckpt, _ = make_checkpoint(tmp_path / "run", hidden=256)  # ~5 MB of weights for a 1 MiB disk
    assert main(["export", str(ckpt), str(small_disk / "export")]) == 2
    err = one_line_error(capsys)
    assert f"No space left on the device while writing {small_disk / 'export'}" in err and "MiB free" in err
    assert list(small_disk.iterdir()) == []
