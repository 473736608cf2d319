"""Benchmark the dbt feature layer: full builds, and the hourly incremental run at 3 months vs 10 years.

1. Full build (`dbt build --full-refresh` of the feature layer: 4 models and their ~60 tests) over the bundled
   18,164 real candles, and over a generated 10-year, 3-product history (262,800 product-hours: a
   deterministic random walk per product, with about 1 hour in 1,000 left out as the API does).
   Figures only; no target.
2. The hourly run: one new closed hour appended for every product, then the incremental models
   (`dbt run`), at 3 months of history and at 10 years of history. Target: 10-year time ≤ 1.25 × 3-month
   time, because the hourly cost must not grow with history. Judged on dbt's own model timings
   (run_results.json), median of 5 hourly runs alternating between the two histories; wall time (dbt
   start-up included) is shown beside it, and so is the same hourly step as `dbt build` (models + tests),
   whose whole-table tests do grow with history.

3. The accuracy marts' hourly run (`fct_prediction_accuracy`, `fct_model_accuracy_monthly`, `model_leaderboard`,
   `fct_forecast_outcomes`: `dbt run`, incremental): 10 registered models' forecasts of every hour (one served,
   nine shadows) and the served outcomes, synthesized directly in SQL over a feature mart of one product's closes,
   3 months vs 10 years of them; each hourly run adds one hour's 10 forecasts and outcome (median of 9, alternating).
   Target: 10-year model time ≤ 1.25 × 3-month, as above. Then the marts' data tests at both histories, as the
   hourly builds run them (`tests_scope: recent`) and as the weekly build does (`all`): figures only.
   `bench/bench_dbt.py accuracy` runs this part alone.

Runs against the database in the env settings (`make bench` = the project's MariaDB), in bases of its own
created with the project's grants (`cb_bench_bundled`, `cb_bench_3m`, `cb_bench_10y`: the `{base}_raw`,
`_staging`, `_intermediate`, `_marts` databases), so the local server is needed for provisioning. dbt writes
its target/ and logs under .local/bench/dbt/. Prints figures and targets; never fails on timing.

    make bench        # or: .venv/bin/python bench/bench_dbt.py
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from candlecast import dbt_runner, mariadb  # noqa: E402
from candlecast.db import engine_for  # noqa: E402
from candlecast.settings import Schemas  # noqa: E402
from extract.schema import ensure_raw_tables  # noqa: E402

RUNS = REPO / ".local" / "bench" / "dbt"
SELECT = ["+features_latest"]
BUILD_ARGS = ("--indirect-selection", "cautious")  # a build runs the layer's own tests only
MODELS = ("stg_coinbase__candles", "int_candles__hourly_spine", "fct_candle_features", "features_latest")
PRODUCTS = {"BTC-USD": 30_000.0, "ETH-USD": 2_000.0, "SOL-USD": 50.0}  # starting prices of the walks
END = datetime(2025, 1, 1)  # first hour after the generated history
TEN_YEARS, THREE_MONTHS = 87_600, 2_160  # hours
HOURLY_REPEATS = 5
RATIO_TARGET = 1.25


@dataclass(frozen=True)
class DbtTiming:
    wall_s: float
    models_s: float  # sum of dbt's own execution_time over the models
    tests_s: float
    per_model: dict[str, float]
    tests: int
    not_passing: tuple[str, ...] = ()  # the tests that did not pass (a run with ``check=False``)


def run_dbt(command: str, select: list[str], base: str, name: str, args: tuple[str, ...] = (),
            check: bool = True) -> DbtTiming:
    result = dbt_runner.run_dbt([command], env={**os.environ, "CANDLECAST_DB_SCHEMA": base}, select=select,
                                args=(*args, *BUILD_ARGS) if command == "build" else args,
                                target_path=RUNS / name / "target", log_path=RUNS / name / "logs", check=check)
    results = result.artifact("run_results.json")["results"]
    per_model = {r["unique_id"].split(".")[-1]: r["execution_time"] for r in results
                 if r["unique_id"].startswith("model.")}
    tests = [r for r in results if r["unique_id"].startswith("test.")]
    return DbtTiming(result.elapsed_s, sum(per_model.values()), sum(r["execution_time"] for r in tests), per_model,
                     len(tests), tuple(r["unique_id"].split(".")[2] for r in tests if r["status"] != "pass"))


def random_walk_rows(product: str, start_price: float, first: datetime, hours: int, seed: int) -> list[str]:
    """SQL value tuples of a deterministic hourly random walk, ~0.1% of hours left out like the API does."""
    import numpy as np

    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0, 0.008, hours)
    closes = start_price * np.exp(np.cumsum(returns))
    opens = np.concatenate([[start_price], closes[:-1]])
    wick = np.abs(rng.normal(0.0, 0.004, (2, hours)))
    highs = np.maximum(opens, closes) * (1 + wick[0])
    lows = np.minimum(opens, closes) * (1 - wick[1])
    volumes = rng.lognormal(3.0, 1.0, hours)
    kept = rng.random(hours) >= 0.001
    kept[0] = kept[-1] = True  # the history spans exactly the requested hours
    return [
        f"('{product}', '{first + timedelta(hours=i):%Y-%m-%d %H:%M:%S}', {opens[i]:.8f}, {highs[i]:.8f}, "
        f"{lows[i]:.8f}, {closes[i]:.8f}, {volumes[i]:.8f}, utc_timestamp(6))"
        for i in range(hours) if kept[i]
    ]


def load_rows(loader, schemas: Schemas, rows: list[str], replace: bool = False) -> None:
    from sqlalchemy import text

    ensure_raw_tables(loader, schemas)
    with loader.begin() as conn:
        if replace:
            conn.execute(text(f"delete from `{schemas.raw}`.candles"))
        for i in range(0, len(rows), 5_000):
            conn.execute(text(
                f"insert into `{schemas.raw}`.candles (product_id, bucket_start, open, high, low, close, volume, "
                f"ingested_at) values {', '.join(rows[i:i + 5_000])}"
            ))


def generated_history(loader, base: str, hours: int) -> Schemas:
    schemas = Schemas(base)
    mariadb.provision(schemas)
    first = END - timedelta(hours=hours)
    rows = [row for seed, (product, price) in enumerate(PRODUCTS.items())
            for row in random_walk_rows(product, price, first, hours, seed)]
    load_rows(loader, schemas, rows, replace=True)
    return schemas


def append_hour(loader, schemas: Schemas, hour: datetime) -> None:
    rows = [f"('{p}', '{hour:%Y-%m-%d %H:%M:%S}', {price}, {price * 1.01}, {price * 0.99}, {price}, 1.5, "
            f"utc_timestamp(6))" for p, price in PRODUCTS.items()]
    load_rows(loader, schemas, rows)


def hourly_runs(
    loader, histories: dict[str, Schemas]
) -> tuple[dict[str, list[DbtTiming]], dict[str, DbtTiming]]:
    """Hourly `dbt run`s, each after one new hour, alternating between the histories so that load from
    anything else on the machine falls on both alike; then one more hour each as `dbt build` (with tests)."""
    runs: dict[str, list[DbtTiming]] = {label: [] for label in histories}
    for i in range(HOURLY_REPEATS):
        for label, schemas in histories.items():
            append_hour(loader, schemas, END + timedelta(hours=i))
            runs[label].append(run_dbt("run", SELECT, schemas.base, f"{label.replace(' ', '')}-hourly-{i}"))
    builds = {}
    for label, schemas in histories.items():
        append_hour(loader, schemas, END + timedelta(hours=HOURLY_REPEATS))
        builds[label] = run_dbt("build", SELECT, schemas.base, f"{label.replace(' ', '')}-hourly-build")
    return runs, builds


def describe(t: DbtTiming) -> str:
    models = ", ".join(f"{m} {t.per_model.get(m, 0):.2f}" for m in MODELS)
    return f"wall {t.wall_s:6.1f} s | models {t.models_s:6.2f} s ({models}) | {t.tests} tests {t.tests_s:6.1f} s"


# --- 3. the accuracy marts: hourly incremental cost at 3 months vs 10 years of forecasts ----------------------

ACCURACY_SELECT = ["fct_prediction_accuracy", "fct_model_accuracy_monthly", "model_leaderboard",
                   "fct_forecast_outcomes"]
ACCURACY_MODELS = tuple(ACCURACY_SELECT)
ACCURACY_PRODUCT = "BTC-USD"
ACCURACY_MODELS_REGISTERED = 10  # production + 9 shadows: every hour has 10 forecasts
ACCURACY_REPEATS = 9  # the hourly runs are ~1 s of model time each: more of them for a steadier median
SPARE_HOURS = ACCURACY_REPEATS + 2  # feature rows after the history's forecasts, for the hourly runs to forecast


def synthesized_forecasts(base: str, hours: int) -> Schemas:
    """A base whose feature mart holds ``hours`` + a few closes of one product and whose ML tables hold 10 models'
    forecasts of every one of those hours (one production, nine shadows) and the served outcomes, all made in SQL
    (MariaDB's sequence engine): only what the accuracy marts read, none of it through the pipeline."""
    from sqlalchemy import text

    from ml.registry import ensure_ml_tables

    schemas = Schemas(base)
    mariadb.provision(schemas, fresh=True)
    admin, ml_engine = engine_for("admin"), engine_for("ml")
    first = END - timedelta(hours=hours)
    total = hours + SPARE_HOURS
    marts, ml = f"`{schemas.marts}`", f"`{schemas.ml}`"
    with admin.begin() as conn:
        # the columns of fct_candle_features the accuracy marts read, keyed like the real one
        conn.execute(text(f"create table {marts}.fct_candle_features (product_id varchar(32) not null, "
                          "hour datetime not null, close decimal(30,12) not null, is_missing_hour int not null, "
                          "primary key (product_id, hour), key ix_fct_candle_features_hour (hour))"))
        conn.execute(text(
            f"insert into {marts}.fct_candle_features select '{ACCURACY_PRODUCT}', "
            f"timestamp '{first:%Y-%m-%d %H:%M:%S}' + interval seq hour, "
            "30000 + 2000 * sin(seq / 500) + 150 * sin(seq / 7) + mod(seq * 7919, 97), "
            f"case when mod(seq, 1000) = 999 then 1 else 0 end from {marts}.seq_0_to_{total - 1}"))
    ensure_ml_tables(ml_engine, schemas)
    with ml_engine.begin() as conn:
        conn.execute(text(
            f"insert into {ml}.model_registry (model_version, product_id, kind, status, training_cutoff, trained_at, "
            "feature_hash, checksum, train_rows, metadata, registered_at, status_changed_at) "
            f"select concat('bench-model-', seq), '{ACCURACY_PRODUCT}', "
            "case when seq = 1 then 'naive_persistence' when seq = 2 then 'naive_drift' else 'lightgbm' end, "
            "case when seq = 0 then 'production' else 'candidate' end, "
            f"timestamp '{first:%Y-%m-%d %H:%M:%S}', timestamp '{first:%Y-%m-%d %H:%M:%S}', repeat('0', 64), "
            f"repeat('0', 64), 1000, '{{}}', utc_timestamp(6), utc_timestamp(6) "
            f"from {ml}.seq_0_to_{ACCURACY_MODELS_REGISTERED - 1}"))
    add_forecasts(schemas, first, END - timedelta(hours=1), historic=True)
    admin.dispose()
    ml_engine.dispose()
    return schemas


def add_forecasts(schemas: Schemas, first_feature_hour: datetime, end_feature_hour: datetime,
                  historic: bool = False) -> None:
    """Every model's forecast from each feature hour in [first, end), and the served outcome (model 0's): written
    now, or (``historic``) each hour's just after that hour closed, as the hourly step wrote them."""
    from sqlalchemy import text

    ml, marts = f"`{schemas.ml}`", f"`{schemas.marts}`"
    at = "f.hour + interval 65 minute" if historic else "utc_timestamp(6)"
    hours = f"f.product_id = '{ACCURACY_PRODUCT}' and f.hour >= timestamp '{first_feature_hour:%Y-%m-%d %H:%M:%S}' " \
            f"and f.hour < timestamp '{end_feature_hour:%Y-%m-%d %H:%M:%S}'"
    engine = engine_for("ml")
    with engine.begin() as conn:
        conn.execute(text(
            f"insert into {ml}.predictions (product_id, target_hour, model_version, role, predicted_close, lower_80, "
            "upper_80, feature_hour, created_at, updated_at) "
            "select f.product_id, f.hour + interval 1 hour, concat('bench-model-', m.seq), "
            "case when m.seq = 0 then 'production' else 'shadow' end, f.close * (1 + (m.seq - 4.5) / 5000), "
            f"f.close * 0.994, f.close * 1.006, f.hour, {at}, {at} "
            f"from {marts}.fct_candle_features f cross join {ml}.seq_0_to_{ACCURACY_MODELS_REGISTERED - 1} m "
            f"where {hours}"))
        conn.execute(text(
            f"insert into {ml}.forecast_outcomes (product_id, target_hour, feature_hour, outcome, model_version, "
            "predicted_close, lower_80, upper_80, base_hour, created_at, updated_at) "
            "select f.product_id, f.hour + interval 1 hour, f.hour, 'model', 'bench-model-0', "
            f"f.close * (1 - 4.5 / 5000), f.close * 0.994, f.close * 1.006, f.hour, {at}, {at} "
            f"from {marts}.fct_candle_features f where {hours}"))
    engine.dispose()


def accuracy_bench() -> None:
    print(f"\n3. accuracy marts ({', '.join(ACCURACY_SELECT)}): {ACCURACY_MODELS_REGISTERED} models' forecasts "
          "of every hour, synthesized in SQL")
    started = time.perf_counter()
    histories = {"3 months": synthesized_forecasts("cb_bench_acc_3m", THREE_MONTHS),
                 "10 years": synthesized_forecasts("cb_bench_acc_10y", TEN_YEARS)}
    print(f"  (synthesized {THREE_MONTHS * ACCURACY_MODELS_REGISTERED:,} and {TEN_YEARS * ACCURACY_MODELS_REGISTERED:,}"
          f" forecasts in {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f})")
    for label, schemas in histories.items():
        full = run_dbt("run", ACCURACY_SELECT, schemas.base, f"acc-{label.replace(' ', '')}-full",
                       args=("--full-refresh",))
        print(f"  full build, {label}: {describe_accuracy(full)}")
    runs: dict[str, list[DbtTiming]] = {label: [] for label in histories}
    for i in range(ACCURACY_REPEATS):
        for label, schemas in histories.items():
            hour = END + timedelta(hours=i) - timedelta(hours=1)
            add_forecasts(schemas, hour, hour + timedelta(hours=1))
            runs[label].append(run_dbt("run", ACCURACY_SELECT, schemas.base, f"acc-{label.replace(' ', '')}-{i}"))
    for label, timings in runs.items():
        for t in timings:
            print(f"  hourly, {label}: {describe_accuracy(t)}")
    short = statistics.median(t.models_s for t in runs["3 months"])
    long = statistics.median(t.models_s for t in runs["10 years"])
    ratio = long / short
    verdict = "within target" if ratio <= RATIO_TARGET else "MISSES target"
    print(f"  hourly dbt model time: 3 months {short:.2f} s, 10 years {long:.2f} s -> ratio {ratio:.2f} "
          f"(target <= {RATIO_TARGET}): {verdict}; wall {statistics.median(t.wall_s for t in runs['3 months']):.1f} s "
          f"vs {statistics.median(t.wall_s for t in runs['10 years']):.1f} s; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    accuracy_tests(histories)


def accuracy_tests(histories: dict[str, Schemas]) -> None:
    """The accuracy marts' data tests as the hourly build runs them (``tests_scope: recent``: the hours an hourly run
    rewrites) and as the weekly build does (``all``: every row), at both histories; figures only."""
    summed: dict[tuple[str, str], float] = {}
    for label, schemas in histories.items():
        for scope in ("recent", "all"):
            t = run_dbt("test", ACCURACY_SELECT, schemas.base, f"acc-{label.replace(' ', '')}-tests-{scope}",
                        args=("--vars", f'{{"tests_scope": "{scope}"}}'), check=False)
            summed[label, scope] = t.tests_s
            print(f"  tests, {label}, tests_scope {scope}: wall {t.wall_s:5.1f} s | {t.tests} tests {t.tests_s:6.2f} s "
                  "summed" + (f" | not passing: {', '.join(t.not_passing)}" if t.not_passing else ""))
    for scope in ("recent", "all"):
        ratio = summed["10 years", scope] / summed["3 months", scope]
        print(f"  tests' time, 10 years vs 3 months, tests_scope {scope}: ratio {ratio:.2f} (figure only; the hourly "
              "builds run `recent`)")


def describe_accuracy(t: DbtTiming) -> str:
    models = ", ".join(f"{m} {t.per_model.get(m, 0):.2f}" for m in ACCURACY_MODELS)
    return f"wall {t.wall_s:6.1f} s | models {t.models_s:6.2f} s ({models})"


def main() -> int:
    import numpy  # noqa: F401  (fail here, not half-way, if the project venv is not used)
    from sqlalchemy import text

    from tests.support import bundled_candles

    print(f"machine: {platform.system()} {platform.release()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; dbt {dbt_runner.dbt_settings().executable}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if sys.argv[1:] == ["accuracy"]:  # the accuracy marts alone
        accuracy_bench()
        return 0
    loader = engine_for("loader")

    print("\n1. full build (dbt build --full-refresh: models + tests)")
    bundled = Schemas("cb_bench_bundled")
    mariadb.provision(bundled)
    rows = [f"('BTC-USD', '{c.bucket_start:%Y-%m-%d %H:%M:%S}', {c.open}, {c.high}, {c.low}, {c.close}, "
            f"{c.volume}, utc_timestamp(6))" for c in bundled_candles()]
    load_rows(loader, bundled, rows, replace=True)
    full_bundled = run_dbt("build", SELECT, bundled.base, "bundled-full", args=("--full-refresh",))
    print(f"  bundled, 18,168 product-hours:   {describe(full_bundled)}")

    started = time.perf_counter()
    ten_years = generated_history(loader, "cb_bench_10y", TEN_YEARS)
    three_months = generated_history(loader, "cb_bench_3m", THREE_MONTHS)
    with loader.connect() as conn:
        raw_rows = conn.execute(text(f"select count(*) from `{ten_years.raw}`.candles")).scalar()
    print(f"  (generated and loaded 10 years and 3 months of 3 products in {time.perf_counter() - started:.0f} s; "
          f"10 years = {raw_rows:,} raw candles)")
    full_10y = run_dbt("build", SELECT, ten_years.base, "10y-full", args=("--full-refresh",))
    print(f"  10 years x 3 products, {TEN_YEARS * 3:,} product-hours: {describe(full_10y)}")
    full_3m = run_dbt("build", SELECT, three_months.base, "3m-full", args=("--full-refresh",))
    print(f"  3 months x 3 products, {THREE_MONTHS * 3:,} product-hours: {describe(full_3m)}")

    print(f"\n2. hourly incremental run (one new hour per product, dbt run), median of {HOURLY_REPEATS}")
    runs, builds = hourly_runs(loader, {"3 months": three_months, "10 years": ten_years})
    for label, timings in runs.items():
        for t in timings:
            print(f"  {label}: {describe(t)}")
    short_models = statistics.median(t.models_s for t in runs["3 months"])
    long_models = statistics.median(t.models_s for t in runs["10 years"])
    short_wall = statistics.median(t.wall_s for t in runs["3 months"])
    long_wall = statistics.median(t.wall_s for t in runs["10 years"])
    ratio = long_models / short_models
    verdict = "within target" if ratio <= RATIO_TARGET else "MISSES target"
    print(f"  dbt model time: 3 months {short_models:.2f} s, 10 years {long_models:.2f} s -> ratio {ratio:.2f} "
          f"(target <= {RATIO_TARGET}): {verdict}")
    print(f"  wall time (dbt start-up included): 3 months {short_wall:.1f} s, 10 years {long_wall:.1f} s -> "
          f"ratio {long_wall / short_wall:.2f}")
    print("  the same hourly step as dbt build (models + tests; the tests read whole tables):")
    for label, t in builds.items():
        print(f"    {label}: {describe(t)}")
    loader.dispose()
    accuracy_bench()
    return 0


if __name__ == "__main__":
    sys.exit(main())
