"""candlecast_weekly_retrain: Sunday 23:30 UTC, features up to date → train → evaluate the store → promote.

An Airflow DAG; the run's data interval end ``E`` (floored to the hour) drives it:

1. ``features``: the dbt feature models with their tests (Cosmos), so training sees every stored hour.
2. ``train``: LightGBM and the naive baselines, trained on hours before ``E - CANDLECAST_HOLDOUT_HOURS``
   (default 168 h), stored as new immutable versions and registered as candidates.
3. ``evaluate``: every stored model of each product scored on the same holdout ``[E - 168 h, E)``, which none
   of them trained on; the scores are recorded in ``model_evaluations``.
4. ``promote``: the lowest MAE on that holdout becomes production (persistence when nothing beats it),
   switched in one transaction and recorded in ``model_promotions``.

Re-running any step changes nothing: the same data gives the same model versions and the same decision.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, dag, task
from candlecast_orchestration.config import RETRAIN_DAG_ID, dag_settings
from candlecast_orchestration.dbt import FEATURE_SELECT, dbt_task_group

SETTINGS = dag_settings()


@dag(
    dag_id=RETRAIN_DAG_ID,
    # A data-interval timetable: the run knows the week it closes (see candlecast_hourly).
    schedule=CronDataIntervalTimetable(SETTINGS.retrain_schedule, timezone="UTC"),
    start_date=SETTINGS.start_date,
    catchup=SETTINGS.catchup,
    max_active_runs=1,
    default_args=SETTINGS.default_args,
    tags=["candlecast"],
    doc_md=__doc__,
)
def candlecast_weekly_retrain() -> None:
    @task
    def train(data_interval_end=None) -> list[dict]:  # type: ignore[no-untyped-def]
        from candlecast_orchestration.tasks import RunConfig, airflow_variables, task_env, train_products

        env = task_env("ml", SETTINGS.conn_prefix)
        config = RunConfig.resolve(airflow_variables(), env)
        return train_products(config.products, config.model_store, data_interval_end, env=env)

    @task
    def evaluate(data_interval_end=None) -> list[dict]:  # type: ignore[no-untyped-def]
        from candlecast_orchestration.tasks import RunConfig, airflow_variables, evaluate_store, task_env

        env = task_env("ml", SETTINGS.conn_prefix)
        config = RunConfig.resolve(airflow_variables(), env)
        return evaluate_store(config.products, config.model_store, data_interval_end, env=env)

    @task
    def promote(data_interval_end=None) -> list[dict]:  # type: ignore[no-untyped-def]
        from candlecast_orchestration.tasks import RunConfig, airflow_variables, promote_best, task_env

        env = task_env("ml", SETTINGS.conn_prefix)
        config = RunConfig.resolve(airflow_variables(), env)
        return promote_best(config.products, config.model_store, data_interval_end, env=env)

    features = dbt_task_group("features", FEATURE_SELECT, SETTINGS)
    features >> train() >> evaluate() >> promote()


candlecast_weekly_retrain()
