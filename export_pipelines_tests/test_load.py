"""Load on the production configuration: PostgreSQL storage, the queued coordinator's limits."""

from __future__ import annotations

import pytest

from .conftest import postgres_or_skip
from .dev_server import production_burst

pytestmark = pytest.mark.slow


def test_a_burst_under_the_production_config_settles_once_within_the_limits(tmp_path):
    postgres_or_skip()
    result = production_burst(tmp_path, requests=300, organizations=10)
    assert result["lost"] == 0 and result["twice"] == 0 and result["unrecorded"] == 0
    assert result["status"] == {"COMPLETED": 270, "FAILED": 30}  # every tenth is invalid
    # deploy/dagster.yaml: at most 4 runs at once, at most 2 per organization.
    assert 1 <= result["most_per_org"] <= 2
    assert result["most"] <= 4
    for message in result["messages"]:
        assert "Error" not in message and "Traceback" not in message, message
