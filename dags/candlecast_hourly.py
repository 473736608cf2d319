"""candlecast_hourly: every hour, the closed hour's candles → dbt features → a forecast → dbt accuracy marts.

An Airflow DAG driven by its data interval ``[start, end)`` (UTC):

0. ``product_batches``: the run's products (Variable ``candlecast_products``, else ``CANDLECAST_EXTRACT_PRODUCTS``)
   in batches of ``CANDLECAST_DAG_BATCH_SIZE`` (50): ``extract`` and ``predict`` are mapped over them (dynamic
   task mapping), one task per batch, so one batch's failure leaves the others' candles and forecasts written, and
   workers share the batches. Extract batches run one at a time (the API's rate limit is per client address).
1. ``extract``: bring every product of the batch (``COINBASE_API_URL`` says where from) up to the interval's end:
   the self-healing incremental run, which catches up after an outage and re-fetches the trailing day.
2. ``features``: the dbt models up to ``fct_candle_features`` / ``features_latest`` with their tests: one
   ``dbt build`` of them, then one Airflow task per model judging its model and tests (Cosmos's watcher mode,
   ``candlecast_orchestration.dbt``). ``predict`` starts when the build is done, beside those tasks.
3. ``predict``: the production model forecasts the hour that starts at the interval's end, from the
   feature row of the hour that just closed (``ml.predict.forecast_hour``), and every other registered model
   that is not archived forecasts it in its shadow (stored, never served); when that hour's candle is
   missing it records a labelled persistence fallback instead. The hours of the extractor's trailing re-fetch
   window that got a fallback and whose candle has since arrived get the model's forecast in the same task
   (``ml.predict.heal_forecasts``): no run needs clearing for a late candle.
4. ``accuracy``: the accuracy marts (``fct_prediction_accuracy``, ``fct_model_accuracy_monthly``,
   ``model_leaderboard``, ``fct_forecast_outcomes``; incremental but the small leaderboard), via Cosmos.
5. ``health``: the ``product_health`` mart as of the hour forecast (the interval's end) and its dbt tests, in one
   Python task (``cycle.health``): it fails (red) when an error-severity check fails (raw data more than 2 h
   behind, the production model losing to persistence by more than 2% over 168 h), naming the product and the
   check; warnings (interval coverage, an hour without a forecast) are only logged.

Every task alerts when it fails for good (``on_failure_callback``: a log line naming DAG, task, run and hour,
and mail when ``CANDLECAST_ALERT_EMAIL`` is set; ``candlecast_orchestration.alerts``).

After a failed ``extract`` (an API outage past the retries) the run goes on: ``features``, ``predict``,
``accuracy`` and ``health`` run anyway (their first tasks' trigger rule is ``all_done``, from the step table's
``runs_after_failure``), so the hour gets its labelled fallback, whose reason names the failed extract. The
run still ends failed: the last task, ``all_steps_ok``, succeeds only when every step's tasks did (Airflow
judges a run by its leaf tasks). The same as ``python -m cycle``, which goes on and exits 1.

Every step is idempotent, so a re-run, a catch-up or ``airflow backfill create`` gives the same rows as a
direct run of the same hours. One run at a time: two runs writing the same dbt tables collide.

The steps are those of ``cycle/steps.py``, which ``python -m cycle`` runs without Airflow: each Python task
runs its step's function, each Cosmos group renders its step's dbt selection.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import CronDataIntervalTimetable, dag, task
from candlecast_orchestration.alerts import default_args
from candlecast_orchestration.dbt import dbt_task_group
from candlecast_orchestration.rules import all_steps_ok, trigger_rule, waits_for, wire_after_failure

from candlecast.settings.dags import HOURLY_DAG_ID, dag_settings
from candlecast.settings.dbt import HOURLY_DBT_VARS
from cycle.steps import ACCURACY_SELECT, FEATURE_SELECT, HOURLY_STEPS

SETTINGS = dag_settings()
# The steps' own tasks take a worker slot before the dbt groups' model tasks, which judge a build beside them
# and are on no step's way (Cosmos weighs its build 20, its model tasks 2).
FIRST: dict[str, Any] = {"priority_weight": 10, "weight_rule": "absolute"}


@dag(
    dag_id=HOURLY_DAG_ID,
    # A data-interval timetable, explicitly: Airflow 3 turns a bare cron string into a trigger timetable
    # (interval start == end), and this DAG needs the hour it covers.
    schedule=CronDataIntervalTimetable(SETTINGS.hourly_schedule, timezone="UTC"),
    start_date=SETTINGS.start_date,
    end_date=SETTINGS.end_date,
    catchup=SETTINGS.catchup,
    max_active_runs=1,
    default_args=default_args(SETTINGS, queue=SETTINGS.hourly_queue),
    tags=["candlecast"],
    doc_md=__doc__,
)
def candlecast_hourly() -> None:
    @task(**FIRST)
    def product_batches() -> list[list[str]]:
        from candlecast_orchestration.tasks import product_batches

        return product_batches(SETTINGS.batch_size)

    # One batch at a time: the API's rate limit is per client address, and each batch's extractor spends all of it.
    @task(max_active_tis_per_dagrun=1, **FIRST)
    def extract(products: list[str], data_interval_start=None, data_interval_end=None) -> list[dict]:
        from candlecast_orchestration.tasks import run_step

        return run_step("extract", data_interval_start, data_interval_end, SETTINGS.conn_prefix, products)

    @task(trigger_rule=trigger_rule(HOURLY_STEPS, "predict"), **FIRST)
    def predict(products: list[str], data_interval_start=None, data_interval_end=None) -> list[dict]:
        from candlecast_orchestration.tasks import run_step

        return run_step("predict", data_interval_start, data_interval_end, SETTINGS.conn_prefix, products)

    # It writes a dbt table: in the dbt pool, one dbt at a time like the Cosmos tasks. Not retried: its verdict is
    # about the data, so a retry repeats it minutes later and only delays the alert; the next hour judges again.
    @task(trigger_rule=trigger_rule(HOURLY_STEPS, "health"), pool=SETTINGS.dbt.pool, retries=0, **FIRST)
    def health(data_interval_start=None, data_interval_end=None) -> list[dict]:
        from candlecast_orchestration.tasks import run_step

        return run_step("health", data_interval_start, data_interval_end, SETTINGS.conn_prefix)

    features = dbt_task_group("features", FEATURE_SELECT, SETTINGS, queue=SETTINGS.hourly_queue,
                              dbt_vars=HOURLY_DBT_VARS)
    accuracy = dbt_task_group("accuracy", ACCURACY_SELECT, SETTINGS, queue=SETTINGS.hourly_queue,
                              dbt_vars=HOURLY_DBT_VARS)
    batches = product_batches()
    # One extract and one predict task per batch of products: a batch's failure leaves the others' work done.
    extracted, predicted = extract.expand(products=batches), predict.expand(products=batches)
    checked = health()
    extracted >> features
    # predict and health need the tables a dbt group built, not its model tasks' verdicts (they run after a
    # failure anyway): they start when the group's build is done, beside those tasks (all_steps_ok waits for all).
    waits_for(HOURLY_STEPS, features, "predict") >> predicted >> accuracy
    waits_for(HOURLY_STEPS, accuracy, "health") >> checked
    # A failed extract (an API outage, say) leaves the stored data as it was: the features, the forecast (a
    # labelled fallback for the hour) and the accuracy marts still run on it, as in the cycle command, and
    # all_steps_ok keeps the run failed.
    wire_after_failure(HOURLY_STEPS, features, accuracy)
    [extracted, features, predicted, accuracy, checked] >> all_steps_ok()


candlecast_hourly()
