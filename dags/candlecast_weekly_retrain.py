"""candlecast_weekly_retrain: Sunday 23:30 UTC, features up to date → train → evaluate the store → promote.

An Airflow DAG; the run's data interval end ``E`` (floored to the hour) drives it:

1. ``features``: the dbt feature models with their tests (Cosmos), so training sees every stored hour.
   Beside it, ``product_batches``: the run's products in batches of ``CANDLECAST_DAG_BATCH_SIZE`` (50); steps 2-4
   run in a task group mapped over them (``retrain``, one per batch: dynamic task mapping), so one batch's
   failure stops only that batch, and workers share the batches.
2. ``train``: LightGBM and the naive baselines, trained on hours before ``E - CANDLECAST_HOLDOUT_HOURS``
   (default 168 h), stored as new immutable versions and registered as candidates.
3. ``evaluate``: every stored model of each product scored on the same holdout ``[E - 168 h, E)``, which none
   of them trained on; the scores are recorded in ``model_evaluations``.
4. ``promote``: the lowest MAE on that holdout becomes production (persistence when nothing beats it),
   switched in one transaction and recorded in ``model_promotions``.

Every task alerts when it fails for good (``candlecast_orchestration.alerts``: a log line, mail when configured).

Re-running any step changes nothing: the same data gives the same model versions and the same decision.

The steps are those of ``cycle/steps.py``, which ``python -m cycle --weekly`` runs without Airflow: each Python task
runs its step's function, each Cosmos group renders its step's dbt selection.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, dag, task, task_group
from candlecast_orchestration.alerts import default_args
from candlecast_orchestration.dbt import dbt_task_group

from candlecast.settings.dags import RETRAIN_DAG_ID, RETRAIN_GROUP, dag_settings
from cycle.steps import FEATURE_SELECT

SETTINGS = dag_settings()


@dag(
    dag_id=RETRAIN_DAG_ID,
    # A data-interval timetable: the run knows the week it closes (see candlecast_hourly).
    schedule=CronDataIntervalTimetable(SETTINGS.retrain_schedule, timezone="UTC"),
    start_date=SETTINGS.start_date,
    end_date=SETTINGS.end_date,
    catchup=SETTINGS.catchup,
    max_active_runs=1,
    default_args=default_args(SETTINGS, queue=SETTINGS.retrain_queue),
    tags=["candlecast"],
    doc_md=__doc__,
)
def candlecast_weekly_retrain() -> None:
    @task
    def product_batches() -> list[list[str]]:
        from candlecast_orchestration.tasks import product_batches

        return product_batches(SETTINGS.batch_size)

    @task
    def train(products: list[str], data_interval_start=None, data_interval_end=None) -> list[dict]:
        from candlecast_orchestration.tasks import run_step

        return run_step("train", data_interval_start, data_interval_end, SETTINGS.conn_prefix, products)

    @task
    def evaluate(products: list[str], data_interval_start=None, data_interval_end=None) -> list[dict]:
        from candlecast_orchestration.tasks import run_step

        return run_step("evaluate", data_interval_start, data_interval_end, SETTINGS.conn_prefix, products)

    @task
    def promote(products: list[str], data_interval_start=None, data_interval_end=None) -> list[dict]:
        from candlecast_orchestration.tasks import run_step

        return run_step("promote", data_interval_start, data_interval_end, SETTINGS.conn_prefix, products)

    # One group per batch of products: a batch's train, evaluate and promote follow each other, and a failed batch
    # stops only itself.
    @task_group(group_id=RETRAIN_GROUP)
    def retrain(products: list[str]) -> None:
        train(products) >> evaluate(products) >> promote(products)

    features = dbt_task_group("features", FEATURE_SELECT, SETTINGS, queue=SETTINGS.retrain_queue)
    features >> retrain.expand(products=product_batches())


candlecast_weekly_retrain()
