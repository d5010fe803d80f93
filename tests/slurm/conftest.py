"""The session's one-node SLURM cluster (tests marked ``slurm``).

Without the SLURM/munge programs the cluster tests skip, naming what to install; with
``DSKD_REQUIRE_SLURM=1`` (CI) they fail instead. When the programs are there but the cluster does
not come up, the tests fail with the daemons' logs.
"""

from __future__ import annotations

import os

import pytest

from .cluster import LocalSlurmCluster, missing_binaries

INSTALL = "apt-get install -y slurmctld slurmd slurm-client munge"


@pytest.fixture(scope="session")
def slurm_cluster():
    missing = missing_binaries()
    if missing:
        message = f"SLURM programs not found ({', '.join(missing)}); install them with `{INSTALL}`"
        if os.environ.get("DSKD_REQUIRE_SLURM") == "1":
            pytest.fail(f"DSKD_REQUIRE_SLURM=1 but {message}", pytrace=False)
        pytest.skip(message)
    cluster = LocalSlurmCluster()
    try:
        cluster.start(timeout=60)
    except Exception as e:
        cluster.stop()
        pytest.fail(f"the local SLURM cluster did not start: {e}", pytrace=False)
    yield cluster
    cluster.stop()
