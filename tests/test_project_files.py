"""The top-level project files: LICENSE is the Apache License 2.0 the metadata names, CITATION.cff is
well-formed Citation File Format with the package's version."""

from __future__ import annotations

import configparser
import hashlib
from pathlib import Path

import yaml

import dskd

ROOT = Path(__file__).resolve().parents[1]
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
"""sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt."""


def test_license_is_the_apache_2_0_text_the_metadata_names():
    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert (cfg["metadata"]["license"], cfg["metadata"]["license_files"]) == ("Apache-2.0", "LICENSE")


def test_citation_file_is_cff_1_2_0_with_the_package_version():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert {"cff-version", "message", "title", "authors"} <= cff.keys()
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0"
    assert cff["version"] == dskd.__version__, "CITATION.cff's version lags dskd/__init__.py"
    paper = cff["preferred-citation"]
    assert {"type", "title", "authors"} <= paper.keys()
    assert "2602.22351" in paper["url"]
    assert [a["family-names"] for a in paper["authors"]] == ["Wang", "Zaki", "Kollias", "Kalantzis"]
