"""The end-to-end tests of ``test_api.py`` that run on every executor, run here on the
remote ones: ``cluster`` (two local worker processes joining over TCP) and ``dask`` (a
LocalCluster of two worker processes started for each job).

The tests are imported, not copied, so both executors pass exactly the suite that
``processes`` passes; this module only overrides the ``executor`` fixture.
"""

from __future__ import annotations

import pytest

from tests.integration.test_api import (  # noqa: F401  (collected by pytest from here)
    test_map_blocks_gets_every_record_once,
    test_map_command_pipes_each_block,
    test_map_lines_on_local_files_every_executor,
)


@pytest.fixture(params=["cluster", "dask"])
def executor(request: pytest.FixtureRequest) -> str:
    """The remote executors; ``workers=2`` in the tests starts two local workers."""
    if request.param == "dask":
        pytest.importorskip("distributed")
    return str(request.param)
