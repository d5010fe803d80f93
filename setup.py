"""Packages of the wheel; the rest of the metadata is in setup.cfg.

The top-level ``lexicon/`` folder (lexical resources a user reads and edits) is not a Python package of
its own: it is mapped into the wheel as the package data folder ``dskd/resources/lexicon/``
(``package_dir`` and ``package_data`` in setup.cfg), read through ``dskd.resources.resource("lexicon",
...)``, which falls back to the checkout's ``lexicon/`` in an editable install.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["dskd", "dskd.*"]), "dskd.resources.lexicon"])
