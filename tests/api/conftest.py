from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.server import ApiServer, start_api


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One real API process per test module (tests use names of their own)."""
    server = start_api(tmp_path_factory.mktemp("api"))
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"the API exited {code} on SIGTERM:\n{server.log_path.read_text()}"
