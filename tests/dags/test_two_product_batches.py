"""Two products, one batch each (``CANDLECAST_DAG_BATCH_SIZE=1``): one batch's failed extract leaves the other
batch's candles and forecast written and its tasks green, and the failed batch's fallback names its own extract.

The second product, ETH-USD, has a stored history (BTC-USD's candles under its id: the prices do not matter here)
that ends before the DAG tests' first hour, and the API no longer serves it (the replay server answers 404, as the
Exchange API does for a delisted product). BTC-USD is the DAG tests' product with the weekly run's production model.

In a file of its own that sorts after ``test_the_airflow_cli``: it adds a product and an hour to the DAG base,
which the tests before it compare with the direct run table for table and judge the health of.
"""

from __future__ import annotations

import pytest

from candlecast.hours import HOUR
from tests.dags.conftest import BASE, DAGS_DIR, HOURLY_START
from tests.dags.test_the_airflow_cli import HOURS

pytestmark = pytest.mark.integration

SERVED, GONE = "BTC-USD", "ETH-USD"
# The interval [20:00, 21:00): the hour after the last the other DAG tests run (the CLI test's [19:00, 20:00)).
START = max(HOURS) + HOUR
ALERTS = "candlecast_alert.candlecast_hourly.%"  # the hourly DAG's alert memory: what it mailed, per task and batch


def forget_alerts() -> None:
    """Forget what earlier runs' alerts mailed, so this run's failure is new (and leave no memory of it after)."""
    from airflow.models import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Variable).filter(Variable.key.like(ALERTS)).delete(synchronize_session=False)


def test_a_failing_batch_leaves_the_other_batchs_forecast_written_and_its_fallback_names_its_own_extract(
        weekly_run, admin_engine, mail_sink, monkeypatch) -> None:
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.utils.session import create_session
    from sqlalchemy import text

    from tests.dags.test_step_failures import text_of

    with admin_engine.begin() as conn:
        conn.execute(text(
            f"insert ignore into `{BASE}_raw`.candles (product_id, bucket_start, open, high, low, close, volume, "
            f"ingested_at) select :gone, bucket_start, open, high, low, close, volume, ingested_at "
            f"from `{BASE}_raw`.candles where product_id = :served and bucket_start < :until"),
            {"gone": GONE, "served": SERVED, "until": HOURLY_START.replace(tzinfo=None)})
    monkeypatch.setenv("CANDLECAST_EXTRACT_PRODUCTS", f"{SERVED},{GONE}")
    monkeypatch.setenv("CANDLECAST_DAG_BATCH_SIZE", "1")  # read when the DAG file is parsed: a bag of its own
    bag = BundleDagBag(dag_folder=DAGS_DIR / "candlecast_hourly.py", bundle_path=DAGS_DIR, bundle_name="dags-folder")
    assert bag.import_errors == {}
    forget_alerts()
    mailed = len(mail_sink.messages)
    try:
        dr = bag.dags["candlecast_hourly"].test(logical_date=START + HOUR)
    finally:
        forget_alerts()
    with create_session() as session:
        states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances(session=session)}
    feature_hour, target = START.replace(tzinfo=None), (START + HOUR).replace(tzinfo=None)
    with admin_engine.connect() as conn:
        candle = dict(conn.execute(text(f"select product_id, count(*) from `{BASE}_raw`.candles "
                                        "where bucket_start = :h group by product_id"), {"h": feature_hour}).all())
        outcomes = {r.product_id: r for r in conn.execute(text(
            f"select product_id, outcome, model_version, reason_code, reason from `{BASE}_ml`.forecast_outcomes "
            "where target_hour = :t"), {"t": target})}
        served = conn.execute(text(f"select product_id, model_version from `{BASE}_ml`.predictions "
                                   "where target_hour = :t and role = 'production'"), {"t": target}).all()

    # one extract and one predict task per product, in the order the products are named
    assert sorted(k for k in states if k[0] in ("extract", "predict")) == [
        ("extract", 0), ("extract", 1), ("predict", 0), ("predict", 1)], states
    # BTC-USD's batch: green, its closed hour fetched and the production model's forecast served for the next
    assert (states[("extract", 0)], states[("predict", 0)]) == ("success", "success"), states
    assert candle == {SERVED: 1}
    assert outcomes[SERVED].outcome == "model" and outcomes[SERVED].model_version is not None
    assert [tuple(r) for r in served] == [(SERVED, outcomes[SERVED].model_version)]
    # ETH-USD's batch: its extract failed, and the alert mailed for it names the product and what the API said
    assert states[("extract", 1)] == "failed", states
    subject = f"candlecast alert: candlecast_hourly.extract[1] failed for {START:%Y-%m-%d %H:%M} UTC"
    extract_alerts = [text_of(m) for m in mail_sink.messages[mailed:] if m["Subject"] == subject]
    assert len(extract_alerts) == 1, [m["Subject"] for m in mail_sink.messages[mailed:]]
    assert f"/products/{GONE}/candles" in extract_alerts[0] and "HTTP 404" in extract_alerts[0]
    assert SERVED not in extract_alerts[0]
    # ... and its predict ran anyway (green): the hour got a labelled fallback whose reason names this batch's
    # failed extract (its own map index; the other batch's extract succeeded)
    assert states[("predict", 1)] == "success", states
    assert (outcomes[GONE].outcome, outcomes[GONE].reason_code) == ("fallback", "candle_missing")
    assert outcomes[GONE].reason.startswith(
        f"no candle for {START:%Y-%m-%d %H:%M} UTC: not fetched: this run's extract step failed")
    # the run is failed (what the UI and monitoring show): its last task did not succeed
    assert dr.state == "failed"
    assert states[("all_steps_ok", -1)] == "upstream_failed", states

