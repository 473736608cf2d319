"""Offline mode (``make airflow OFFLINE=1``) without an Airflow of its own: the replay server runs in the background
and answers as the Coinbase API, and DAGs bounded to its data schedule no hour it does not have when unpaused."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from candlecast import replay_local
from candlecast.airflow_local import LocalAirflow, offline_env
from tests.dags.conftest import DAGS_DIR, TEST_LOCAL_DIR
from tests.support import free_port

pytestmark = pytest.mark.integration

# The bundled sample the replay server serves (data/coinbase_btc-usd_1h.csv.gz).
REPLAY_FIRST = datetime(2021, 12, 14, tzinfo=UTC)
REPLAY_LAST = datetime(2024, 1, 9, 23, tzinfo=UTC)


def test_offline_mode_serves_the_bundled_candles_in_the_background_and_bounds_the_dags_to_them() -> None:
    airflow = LocalAirflow(home=TEST_LOCAL_DIR / "offline-airflow", port=1)
    env = {"CANDLECAST_REPLAY_PORT": str(free_port())}
    replay = airflow.replay(env)
    try:
        values = offline_env(airflow, env)
        pid = replay_local.running_pid(replay)
        assert pid is not None
        assert values == {
            "COINBASE_API_URL": replay.url, "CANDLECAST_EXTRACT_PRODUCTS": "BTC-USD",
            "CANDLECAST_DAG_START_DATE": REPLAY_FIRST.isoformat(), "CANDLECAST_DAG_END_DATE": REPLAY_LAST.isoformat(),
            "CANDLECAST_DAG_CATCHUP": "false",
        }
        # what the extractor asks the API: the replay's last hour is there
        query = f"granularity=3600&start={REPLAY_LAST:%Y-%m-%dT%H:%M:%SZ}&end={REPLAY_LAST:%Y-%m-%dT%H:%M:%SZ}"
        with urllib.request.urlopen(f"{replay.url}/products/BTC-USD/candles?{query}", timeout=10) as resp:
            candles = json.loads(resp.read())
        assert [c[0] for c in candles] == [int(REPLAY_LAST.timestamp())]
        assert offline_env(airflow, env) == values  # a second start: the same server
        assert replay_local.running_pid(replay) == pid
    finally:
        assert replay_local.stop(replay) is True
    assert replay_local.stop(replay) is False
    assert replay_local.running_pid(replay) is None


def test_unpausing_a_dag_bounded_to_the_replay_schedules_nothing_past_its_last_hour(
        monkeypatch: pytest.MonkeyPatch, dbt_manifest: Path) -> None:
    import pendulum
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import DagRunInfo

    monkeypatch.setenv("CANDLECAST_DAG_START_DATE", REPLAY_FIRST.isoformat())
    monkeypatch.setenv("CANDLECAST_DAG_END_DATE", REPLAY_LAST.isoformat())
    bag = BundleDagBag(dag_folder=DAGS_DIR, bundle_path=DAGS_DIR, bundle_name="dags-folder")
    after_last = REPLAY_LAST.replace(day=10, hour=0)
    last_hour = DagRunInfo.interval(pendulum.instance(REPLAY_LAST), pendulum.instance(after_last))
    for dag_id, dag in bag.dags.items():
        assert (dag.start_date, dag.end_date) == (REPLAY_FIRST, REPLAY_LAST), dag_id
        scheduled = DagSerialization.from_dict(DagSerialization.to_dict(dag))  # what the scheduler reads
        # unbounded, the timetable has an interval after the replay's last hour ...
        assert scheduled.next_dagrun_info(last_automated_run_info=last_hour, restricted=False) is not None, dag_id
        # ... bounded to the replay, nothing: neither on unpausing nor after the replay's last hour ran
        assert scheduled.next_dagrun_info(last_automated_run_info=None) is None, dag_id
        assert scheduled.next_dagrun_info(last_automated_run_info=last_hour) is None, dag_id
