"""The standard Airflow CLI, typed as a data engineer would, against the running scheduler (the standalone Airflow of
``test_running_airflow_api``, on PostgreSQL): no import errors to list.

(``test_running_airflow_api`` runs one interval for a logical date with ``airflow backfill create`` and compares its
tables with a direct run of the hour.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from candlecast.airflow_local import LocalAirflow
from tests.dags.test_running_airflow_api import airflow_cli

pytestmark = pytest.mark.integration


def _json_output(stdout: str) -> Any:
    """The JSON document of ``-o json``: its last line (Airflow logs warnings to standard output before it)."""
    return json.loads(stdout.strip().splitlines()[-1])


def test_list_import_errors_finds_none_in_the_running_instance(api_airflow: LocalAirflow) -> None:
    assert _json_output(airflow_cli(api_airflow, "dags", "list-import-errors", "-o", "json")) == []
