"""The steps of the hourly and the weekly cycle: thin wrappers over the extract/, dbt and ml/ library functions.

One table of steps serves both ways of running them: the cycle command (``cycle.run``) runs a whole cycle
in order, and each Airflow task of ``dags/`` runs one step (``candlecast_orchestration.tasks.run_step``),
except the dbt steps, which Cosmos renders as one Airflow task per model of the same selection.

Every step takes its times from the caller (the interval) and its settings from the ``RunContext``, and
returns a small JSON-able summary (Airflow keeps it as XCom; the command prints one line of it). Nothing heavy
is imported at module level: the DAG files import the selections from here when they are parsed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from candlecast.hours import HOUR, floor_hour
from candlecast.settings.dbt import HOURLY_DBT_VARS
from cycle.context import Interval, RunContext, schema_base

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from candlecast.settings import Role, Schemas
    from ml.lineage import FeatureLineage
    from ml.store import ModelStore

log = logging.getLogger(__name__)
T = TypeVar("T")

# What each dbt step builds (dbt selection syntax), with the tests of those models. The feature chain ends at
# the view the ML layer reads. The DAGs render the same selections through Cosmos.
FEATURE_SELECT: tuple[str, ...] = ("+fct_candle_features", "+features_latest")
ACCURACY_SELECT: tuple[str, ...] = ("fct_prediction_accuracy", "fct_model_accuracy_monthly", "model_leaderboard",
                                     "fct_forecast_outcomes")

# A test that reads two models (relationships, spine continuity, no-lookahead) runs once both exist, as in
# the DAGs' Cosmos tasks (TestIndirectSelection.BUILDABLE): dbt's default would run it with the first one
# built and fail on a fresh database.
INDIRECT_SELECTION: tuple[str, ...] = ("--indirect-selection", "buildable")

Summary = list[dict[str, Any]]

HEALTH_STEP = "health"  # the hourly cycle's last step: its failure is a verdict on the hour, not a failed job


def json_safe(value: Any) -> Any:
    """XCom-safe copy: NaN (a metric with nothing to measure) becomes None, datetimes ISO strings."""
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class ProductsFailed(RuntimeError):
    """A step did its work for every product but these (``failures``: product -> its error); the others' results
    are written."""

    def __init__(self, failures: dict[str, BaseException], attempted: int) -> None:
        listed = "; ".join(_product_error(product, exc) for product, exc in failures.items())
        super().__init__(f"{len(failures)} of {attempted} products failed: {listed}")
        self.failures = failures


def _product_error(product: str, exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    named = message if message.startswith(product) else f"{product}: {message}"
    return f"{type(exc).__name__}: {named}"


def each_product(products: Sequence[str], work: Callable[[str], T]) -> tuple[dict[str, T], dict[str, BaseException]]:
    """``work`` for every product, one product's failure never stopping the others: (results, failures) by
    product. With 250 products a step must not leave 249 undone because one has no model or bad data."""
    results: dict[str, T] = {}
    failures: dict[str, BaseException] = {}
    for product in products:
        try:
            results[product] = work(product)
        except Exception as exc:
            log.error("%s failed: %s: %s", product, type(exc).__name__, exc)
            failures[product] = exc
    return results, failures


def raise_failures(failures: dict[str, BaseException], attempted: int) -> None:
    """After the others' work is written: the one product's own error as it is, or ``ProductsFailed`` naming each."""
    if len(failures) == 1:
        raise next(iter(failures.values()))
    if failures:
        raise ProductsFailed(failures, attempted)


@contextmanager
def _engine(role: Role, env: Mapping[str, str]) -> Iterator[tuple[Engine, Schemas]]:
    """An engine for one role, checked before use (a clear error naming where it connects) and disposed after."""
    from candlecast.db import check_connection, make_engine
    from candlecast.settings import db_settings

    settings = db_settings(role, env)
    engine = make_engine(settings)
    try:
        check_connection(engine, f"candlecast {role}")
        yield engine, settings.schemas
    finally:
        engine.dispose()


def model_store(ctx: RunContext, engine: Engine, schemas: Schemas) -> ModelStore:
    """The shared model store (``ml.store``): versions in the ml role's database, cached in ``ctx.model_store``."""
    from ml.shared_store import StoreDatabase
    from ml.store import ModelStore

    return ModelStore(ctx.model_store, StoreDatabase(engine, schemas))


def feature_lineage(ctx: RunContext) -> FeatureLineage:
    """How the feature tables are computed (``ml.lineage``), from the manifest of the dbt project that builds them."""
    from candlecast.settings import dbt_settings
    from ml.lineage import read_lineage

    return read_lineage(ctx.dbt_manifest or dbt_settings(ctx.env).manifest_path)


# --- the hourly steps --------------------------------------------------------------------------------

def extract_interval(ctx: RunContext, interval: Interval) -> Summary:
    """Bring every product's raw candles up to the interval's end, healing what earlier runs missed.

    ``extract.pipeline.incremental``: every hour after a product's newest stored one (bounded by
    ``CANDLECAST_EXTRACT_MAX_CATCHUP_HOURS``; beyond that it fails naming the backfill to run) plus the
    trailing ``CANDLECAST_EXTRACT_REFETCH_HOURS``, so late and corrected candles land. ``now`` is the
    interval's end: the hours before it are closed by then, and the open hour is never stored. Fails (after
    storing the others) when any product failed.
    """
    from candlecast.settings import ExtractSettings
    from extract.pipeline import incremental

    settings = ExtractSettings.from_env(ctx.env).with_(products=ctx.products)
    with _engine("loader", ctx.env) as (engine, schemas):
        results = incremental(ctx.products, interval.end, engine=engine, schemas=schemas, settings=settings,
                              now=interval.end)
    summaries = []
    for result in results:
        log.info("%s", result.summary())
        summaries.append({
            "product": result.product_id, "start": result.span.start.isoformat(), "end": result.span.end.isoformat(),
            "received": result.received, "inserted": result.inserted, "updated": result.updated,
            "unchanged": result.unchanged, "rejected": result.rejected, "gaps": [g.isoformat() for g in result.gaps],
        })
    return summaries


_FAILED_BEFORE_PREDICT = {
    "extract": "not fetched: this run's extract step failed (API outage or database unreachable)",
    "features": "not built: this run's features step failed",
}


def predict_interval_end(ctx: RunContext, interval: Interval) -> Summary:
    """Record an outcome for the hour starting at the interval's end, per product (``ml.predict.forecast_hour``):
    the production model's forecast from the just-closed hour (served; every other registered, non-archived model
    forecasts the same hour in its shadow, or is skipped with the reason), or, when that hour's candle is missing, a
    labelled persistence fallback (or "none") with its reason; the step succeeds either way. It fails when the
    model path itself fails (no production model, a model that will not load). It runs after a failed extract
    too (``runs_after_failure``): then a missing candle's fallback says so in its reason.

    Then it heals (``ml.predict.heal_forecasts``): the earlier hours of the extractor's trailing re-fetch window
    (``CANDLECAST_EXTRACT_REFETCH_HOURS`` before the interval's end, where late candles land) that got a
    fallback, or no outcome at all (their cycle never ran or died before predict), and whose candle has since
    arrived get the model's forecast, so no interval needs re-running by hand. Each product's summary lists the
    hours it healed."""
    from candlecast.settings import ExtractSettings
    from ml.predict import forecast_hour, heal_forecasts

    feature_hour = interval.end - HOUR
    refetch_hours = ExtractSettings.from_env(ctx.env).refetch_hours
    # the feature hours whose candles this interval's extract re-fetched, the just-closed one (above) excepted
    heal_start = min(interval.end - refetch_hours * HOUR, feature_hour)
    # a fallback's reason then says why the candle is missing for sure, not the usual guess
    upstream = "; ".join(_FAILED_BEFORE_PREDICT.get(name, f"this run's {name} step failed")
                         for name in ctx.failed_steps) or None
    lineage = feature_lineage(ctx)
    healing_failures: dict[str, BaseException] = {}
    with _engine("ml", ctx.env) as (engine, schemas):
        store = model_store(ctx, engine, schemas)
        outcomes, failures = each_product(ctx.products, lambda product: forecast_hour(
            engine, schemas, store, product, feature_hour, upstream_failure=upstream, lineage=lineage))
        healed = heal_forecasts(engine, schemas, store, list(outcomes), heal_start, feature_hour, lineage=lineage,
                                failures=healing_failures)
    for product, exc in healing_failures.items():
        failures.setdefault(product, exc)
    raise_failures(failures, len(ctx.products))
    out = []
    for outcome in outcomes.values():
        hours = [o.feature_hour.isoformat() for o in healed.get(outcome.product_id, [])]
        out.append({**outcome.as_json(), "summary": outcome.summary(), "healed": hours,
                    "shadows": list(outcome.shadows), "shadow_skips": list(outcome.shadow_skips)})
    return out


def health_check(ctx: RunContext, interval: Interval) -> Summary:
    """Build the ``product_health`` mart as of the hour this cycle forecasts (the interval's end) and judge its
    dbt tests (``cycle.health``): fails (``HealthCheckFailed``, naming each product and failing check) when an
    error-severity test fails: raw data more than 2 h behind, the production model losing to persistence;
    warnings (interval coverage, an hour with no forecast) are logged and listed in the summary. It runs after a
    failed step too: an outage is when stale data most needs saying."""
    from cycle.health import check_health

    work = dbt_target_dir(ctx.env)
    report = check_health(ctx.env, interval.end, target_path=work / "target", log_path=work / "logs",
                          pass_fds=ctx.inherit_fds)
    return [report.as_json()]


def dbt_target_dir(env: Mapping[str, str]) -> Path:
    """Where the cycle's dbt keeps its artifacts and logs: under the local dir, so it never rewrites
    ``dbt_project/target/manifest.json`` (``make dbt-parse`` makes that one for Cosmos) and keeps its
    partial-parse cache from one hour to the next; one per database base, so cycles on two bases (tests, a
    soak beside a live run) never write one target at once."""
    from candlecast.settings import local_dir

    return local_dir(env) / "cycle" / "dbt" / schema_base(env)


def dbt_manifest(env: Mapping[str, str]) -> Path:
    """The manifest the cycle's own dbt steps write (``dbt_build``): the ML steps of a cycle read the feature lineage
    from it (``RunContext.dbt_manifest``), the project that built the tables they read."""
    return dbt_target_dir(env) / "target" / "manifest.json"


def dbt_build(select: Sequence[str], dbt_vars: Mapping[str, str] | None = None
              ) -> Callable[[RunContext, Interval], Summary]:
    """A step running ``dbt build --select ...`` (models and their tests) through the one dbt runner, with
    ``dbt_vars`` as its ``--vars``."""
    import json

    args = INDIRECT_SELECTION + (("--vars", json.dumps(dict(dbt_vars))) if dbt_vars else ())

    def build(ctx: RunContext, interval: Interval) -> Summary:
        from candlecast.dbt_runner import run_dbt

        work = dbt_target_dir(ctx.env)
        result = run_dbt(["build"], env=ctx.env, select=select, args=args,
                         target_path=work / "target", log_path=work / "logs", pass_fds=ctx.inherit_fds)
        return [{"command": result.describe(), "result": result.summary(),
                 "dbt_seconds": round(result.elapsed_s, 2)}]

    build.__name__ = f"dbt_build_{'_'.join(s.strip('+') for s in select)}"
    build.__doc__ = f"dbt build --select {' '.join(select)}"
    return build


# --- the weekly steps --------------------------------------------------------------------------------

def training_cutoff(window_end: datetime, holdout_hours: int) -> datetime:
    """The new models train before this, leaving the last ``holdout_hours`` for the evaluation every model faces."""
    return floor_hour(window_end) - timedelta(hours=holdout_hours)


def train_products(ctx: RunContext, interval: Interval) -> Summary:
    """Train LightGBM and the baselines on hours before ``end - CANDLECAST_HOLDOUT_HOURS``; register them."""
    from candlecast.settings import ml_settings
    from ml.train import TrainConfig, train

    settings = ml_settings(ctx.env)
    cutoff = training_cutoff(interval.end, settings.holdout_hours)
    config = TrainConfig(num_threads=settings.num_threads)
    lineage = feature_lineage(ctx)
    with _engine("ml", ctx.env) as (engine, schemas):
        store = model_store(ctx, engine, schemas)
        results, failures = each_product(ctx.products, lambda product: train(
            engine, schemas, store, product, cutoff, config, lineage=lineage))
    raise_failures(failures, len(ctx.products))
    return [{"product": product, "cutoff": cutoff.isoformat(), "versions": result.versions}
            for product, result in results.items()]


def _evaluate(ctx: RunContext, window_end: datetime, record: bool) -> tuple[dict[str, Any], dict[str, BaseException]]:
    """Every product's evaluation report, and the products whose evaluation failed with their errors."""
    from ml.evaluate import evaluate

    lineage = feature_lineage(ctx)
    with _engine("ml", ctx.env) as (engine, schemas):
        store = model_store(ctx, engine, schemas)
        return each_product(ctx.products, lambda product: evaluate(
            engine, schemas, store, product, window_end, record=record, lineage=lineage))


def evaluate_store(ctx: RunContext, interval: Interval) -> Summary:
    """Score every stored model of each product on the holdout that ends at the interval's end; record it."""
    reports, failures = _evaluate(ctx, interval.end, True)
    raise_failures(failures, len(ctx.products))
    out = []
    for product, report in reports.items():
        log.info("%s holdout scores:\n%s", product, report.table())
        out.append({
            "product": product, "window_start": report.window_start.isoformat(),
            "window_end": report.window_end.isoformat(), "rows": report.rows,
            "models": json_safe([r.as_row() for r in report.results]),
        })
    return out


def promote_best(ctx: RunContext, interval: Interval) -> Summary:
    """Promote each product's best model (``ml.promote``: the holdout score and, where the models have one, their
    live record of realized shadow forecasts; persistence always competes).

    The scores are recomputed here rather than carried over from ``evaluate``: scoring is deterministic and
    cheap (a few models over one week), and this keeps the step re-runnable on its own.
    """
    from candlecast.settings import ml_settings
    from ml.promote import PromotionRule, promote

    settings = ml_settings(ctx.env)
    rule = PromotionRule(settings.promotion_live_hours, settings.promotion_min_live_hours, settings.shadow_retrains)
    reports, failures = _evaluate(ctx, interval.end, False)
    with _engine("ml", ctx.env) as (engine, schemas):
        decisions, promote_failures = each_product(list(reports), lambda product: promote(
            engine, schemas, reports[product], rule))
    raise_failures({**failures, **promote_failures}, len(ctx.products))
    return [{"product": product, "production": d.winner, "previous": d.previous, "changed": d.changed,
             "evidence": d.evidence, "reason": d.reason} for product, d in decisions.items()]


# --- one line per step, for the command's output -----------------------------------------------------

SHOWN_PRODUCTS = 5  # with more products, a step's line counts them and shows the first few


def _joined(parts: list[str], what: str) -> str:
    if len(parts) <= SHOWN_PRODUCTS:
        return "; ".join(parts)
    shown = "; ".join(parts[:SHOWN_PRODUCTS])
    return f"{len(parts)} products {what}; {shown}; ... ({len(parts) - SHOWN_PRODUCTS} more)"


def _describe_extract(summary: Summary) -> str:
    parts = []
    for s in summary:
        span = f"{s['start'][:16]}..{s['end'][:16]}".replace("T", " ")
        gaps = f", {len(s['gaps'])} missing hour(s)" if s["gaps"] else ""
        parts.append(f"{s['product']} {span}: {s['received']} received, {s['inserted']} inserted, "
                     f"{s['updated']} updated, {s['unchanged']} unchanged, {s['rejected']} rejected{gaps}")
    inserted = sum(s["inserted"] for s in summary)
    return _joined(parts, f"extracted, {inserted} candles inserted")


def _describe_predict(summary: Summary) -> str:
    def healed(s: dict[str, Any]) -> str:
        if not s.get("healed"):
            return ""
        return f" (healed {len(s['healed'])} earlier hour(s) that had a fallback or no outcome)"

    def shadows(s: dict[str, Any]) -> str:
        if not s.get("shadows") and not s.get("shadow_skips"):
            return ""
        skipped = f", {len(s['shadow_skips'])} skipped" if s.get("shadow_skips") else ""
        return f" (+{len(s.get('shadows') or [])} shadow forecast(s){skipped})"

    fallbacks = sum(1 for s in summary if s.get("outcome") != "model")
    return _joined([s["summary"] + shadows(s) + healed(s) for s in summary],
                   f"forecast, {len(summary) - fallbacks} by their model, {fallbacks} fallback or none")


def _describe_dbt(summary: Summary) -> str:
    return "; ".join(f"{s['command']}: {s['result']}" for s in summary)


def _describe_health(summary: Summary) -> str:
    parts = []
    for s in summary:
        statuses = ", ".join(f"{p} {st}" for p, st in s["statuses"].items()) or "no product"
        warnings = f"; {len(s['warnings'])} warning(s): " + "; ".join(s["warnings"]) if s["warnings"] else ""
        parts.append(f"{statuses} at {s['cycle_hour'][:16].replace('T', ' ')} UTC ({s['result']}){warnings}")
    return "; ".join(parts)


def _describe_train(summary: Summary) -> str:
    return _joined([f"{s['product']}: {len(s['versions'])} models trained before "
                    f"{s['cutoff'][:16].replace('T', ' ')} UTC" for s in summary], "trained")


def _describe_evaluate(summary: Summary) -> str:
    parts = []
    for s in summary:
        scored = [m for m in s["models"] if m["scores"]]
        best = min(scored, key=lambda m: m["scores"]["mae"], default=None)
        lead = f", lowest MAE {best['scores']['mae']:.2f} ({best['version']})" if best else ""
        parts.append(f"{s['product']}: {len(scored)} of {len(s['models'])} models scored on {s['rows']} hours{lead}")
    return _joined(parts, "evaluated")


def _describe_promote(summary: Summary) -> str:
    changed = sum(1 for s in summary if s["changed"])
    return _joined([f"{s['product']}: {'promoted' if s['changed'] else 'kept'} {s['production']} "
                    f"(on the {s.get('evidence', 'holdout')})" for s in summary], f"judged, {changed} promoted")


@dataclass(frozen=True)
class Step:
    """One step of a cycle: its name (the Airflow task or task group id), the database role it works as,
    what it does, and how its summary reads on one line."""

    name: str
    role: Role
    run: Callable[[RunContext, Interval], Summary]
    describe: Callable[[Summary], str]
    select: tuple[str, ...] = ()  # the dbt selection, for the steps Cosmos renders in the DAGs
    # Runs even when an earlier step of the run failed (Airflow's trigger_rule "all_done"; the DAGs set it from
    # here): the run still ends failed. For steps that make sense on whatever the tables hold, so that a failed
    # extract (an API outage) still gets its hour a labelled forecast outcome instead of silence.
    runs_after_failure: bool = False
    # Runs as a process of its own holding only its role's password (``cycle.step_process``), which finds it
    # by name in the tables below; a step not in them (a test's) runs in the caller's process. dbt steps are
    # processes of their own anyway.
    own_process: bool = False
    # Runs in ``RunContext.workers`` processes at once, each with a share of the products (``run_in_processes``):
    # the ML steps, whose per-product work is CPU-bound. Not extract (the API's rate limit is per client address).
    parallel: bool = False
    # A dbt step's ``--vars`` (the DAGs render the same into their Cosmos group).
    dbt_vars: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_dbt(self) -> bool:
        return bool(self.select)

    def execute(self, ctx: RunContext, interval: Interval) -> Summary:
        """Run the step as the cycle command and the DAGs' tasks do: in a process of its own when so marked."""
        if self.own_process:
            from cycle.step_process import run_in_own_process, run_in_processes

            return (run_in_processes if self.parallel else run_in_own_process)(self, ctx, interval)
        return self.run(ctx, interval)


def _dbt_step(name: str, select: tuple[str, ...], runs_after_failure: bool = False,
              dbt_vars: Mapping[str, str] | None = None) -> Step:
    return Step(name, "transformer", dbt_build(select, dbt_vars), _describe_dbt, select, runs_after_failure,
                dbt_vars=dict(dbt_vars or {}))


def _python_step(name: str, role: Role, run: Callable[[RunContext, Interval], Summary],
                 describe: Callable[[Summary], str], runs_after_failure: bool = False, parallel: bool = False) -> Step:
    return Step(name, role, run, describe, runs_after_failure=runs_after_failure, own_process=True, parallel=parallel)


# The DAGs' tasks, in their order (tests/dags checks the DAGs against these tables).
# After a failed extract the hourly cycle goes on: dbt rebuilds from what raw holds, predict records the
# model's forecast or a labelled fallback, the accuracy marts keep it apart; the run still ends failed. The
# weekly steps each need the one before to have succeeded (no model to evaluate, no scores to promote on).
HOURLY_STEPS: tuple[Step, ...] = (
    _python_step("extract", "loader", extract_interval, _describe_extract),
    _dbt_step("features", FEATURE_SELECT, runs_after_failure=True, dbt_vars=HOURLY_DBT_VARS),
    _python_step("predict", "ml", predict_interval_end, _describe_predict, runs_after_failure=True, parallel=True),
    _dbt_step("accuracy", ACCURACY_SELECT, runs_after_failure=True, dbt_vars=HOURLY_DBT_VARS),
    # Not a Cosmos group: one Python step (as the transformer, which builds the mart and reads the failing rows)
    # builds the health mart and judges its tests by severity, so an error fails that task (red) and names the
    # product and check, while a warning only logs.
    _python_step(HEALTH_STEP, "transformer", health_check, _describe_health, runs_after_failure=True),
)
WEEKLY_STEPS: tuple[Step, ...] = (
    _dbt_step("features", FEATURE_SELECT),
    _python_step("train", "ml", train_products, _describe_train, parallel=True),
    _python_step("evaluate", "ml", evaluate_store, _describe_evaluate, parallel=True),
    _python_step("promote", "ml", promote_best, _describe_promote, parallel=True),
)


def step(name: str) -> Step:
    """A Python step by name (the dbt steps share names between the cycles and are found in the tables)."""
    for candidate in (*HOURLY_STEPS, *WEEKLY_STEPS):
        if candidate.name == name:
            return candidate
    raise KeyError(f"no cycle step named {name!r}")


