"""``python -m ml train|evaluate|promote|predict|forecast|backtest``: thin wrappers over the library functions.

Times are CLI arguments (UTC, ``YYYY-MM-DDTHH:MM`` or ``YYYY-MM-DD HH``); where one is left out it is
taken from the data (the newest hour of the feature table), never from the wall clock.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from candlecast.hours import HOUR, cli_time, naive_utc
from candlecast.inputs import product_id_arg

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from candlecast.settings import MlSettings, Schemas
    from ml.evaluate import EvaluationReport
    from ml.lineage import FeatureLineage
    from ml.store import ModelStore


class CliError(RuntimeError):
    pass


_utc_hour = cli_time(on_the_hour=True)


def parse_hour(value: str) -> datetime:
    """An hour on the command line, by the rule of every CLI (ISO 8601; no offset: UTC), naive as MariaDB's."""
    return naive_utc(_utc_hour(value))


def _data_end(engine: Engine, schemas: Schemas, product: str) -> datetime:
    from ml.features import newest_hour

    # Windows end (exclusive) on target hours: the newest row's hour is the last one whose close is known.
    return newest_hour(engine, schemas, product) + HOUR


def _context() -> tuple[Engine, Schemas, MlSettings, ModelStore]:
    from candlecast.db import check_connection, make_engine
    from candlecast.settings import db_settings, ml_settings
    from ml.shared_store import StoreDatabase
    from ml.store import ModelStore

    db = db_settings("ml")
    engine = make_engine(db)
    check_connection(engine, "candlecast ml")
    settings = ml_settings()
    return engine, db.schemas, settings, ModelStore(settings.store_dir, StoreDatabase(engine, db.schemas))


def _lineage() -> FeatureLineage:
    """How the feature table is computed, from the dbt manifest at CANDLECAST_DBT_MANIFEST (`make dbt-parse`)."""
    from candlecast.settings import dbt_settings
    from ml.lineage import read_lineage

    return read_lineage(dbt_settings().manifest_path)


def cmd_train(args: argparse.Namespace) -> str:
    from ml.train import TrainConfig, train

    engine, schemas, settings, store = _context()
    product = args.product or settings.product
    if args.cutoff:
        cutoff = args.cutoff
    else:
        end = args.end or _data_end(engine, schemas, product)
        cutoff = end - timedelta(hours=args.holdout_hours or settings.holdout_hours)
    config = TrainConfig(num_threads=settings.num_threads, validation_hours=args.validation_hours)
    return train(engine, schemas, store, product, cutoff, config, lineage=_lineage()).summary()


def _tqdm_progress(total: int, desc: str) -> tuple[Callable[..., None], Callable[[], None]]:
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing in logs (Airflow, CI, pipes)
    bar = tqdm(total=total, desc=desc, unit="model", file=sys.stderr, leave=False, disable=None)
    return (lambda *_: bar.update(1)), bar.close


def _evaluate(args: argparse.Namespace, record: bool = True) -> tuple[Engine, Schemas, EvaluationReport]:
    from ml.evaluate import evaluate

    engine, schemas, settings, store = _context()
    product = args.product or settings.product
    end = args.end or _data_end(engine, schemas, product)
    tick, close = _tqdm_progress(len(store.versions(product)), "scoring")
    try:
        report = evaluate(engine, schemas, store, product, end, record=record, progress=tick, lineage=_lineage())
    finally:
        close()
    return engine, schemas, report


def cmd_evaluate(args: argparse.Namespace) -> str:
    return _evaluate(args)[2].table()


def cmd_promote(args: argparse.Namespace) -> str:
    from candlecast.settings import ml_settings
    from ml.promote import PromotionRule, promote

    settings = ml_settings()
    engine, schemas, report = _evaluate(args)
    rule = PromotionRule(settings.promotion_live_hours, settings.promotion_min_live_hours, settings.shadow_retrains)
    return report.table() + "\n" + promote(engine, schemas, report, rule).summary()


def cmd_predict(args: argparse.Namespace) -> str:
    from ml.predict import predict_range

    engine, schemas, settings, store = _context()
    product = args.product or settings.product
    if args.hour:
        start, end = args.hour, args.hour + HOUR
    elif args.start:
        start, end = args.start, args.end or args.start + HOUR
    else:
        end = _data_end(engine, schemas, product)
        start = end - args.last * HOUR
    predictions = predict_range(engine, schemas, store, product, start, end, lineage=_lineage())
    last = predictions[-1]
    return (f"{product}: wrote {len(predictions)} predictions with {last.model_version} into {schemas.ml}.predictions "
            f"(feature hours {start:%Y-%m-%d %H:%M}..{end - HOUR:%Y-%m-%d %H:%M} UTC); newest: "
            f"{last.target_hour:%Y-%m-%d %H:%M} close ${last.predicted_close:,.2f} "
            f"[80%: ${last.lower_80:,.2f} .. ${last.upper_80:,.2f}]")


def cmd_forecast(args: argparse.Namespace) -> str:
    from ml.predict import forecast_hours

    engine, schemas, settings, store = _context()
    product = args.product or settings.product
    outcomes = forecast_hours(engine, schemas, store, product, args.hour, args.end or args.hour + HOUR,
                              lineage=_lineage())
    return "\n".join(o.summary() for o in outcomes)


def cmd_backtest(args: argparse.Namespace) -> str:
    from tqdm import tqdm

    from ml.backtest import walk_forward, write_outputs
    from ml.features import read_features
    from ml.train import TrainConfig

    engine, schemas, settings, _store = _context()
    product = args.product or settings.product
    end = args.end or _data_end(engine, schemas, product)
    start = args.start or end - timedelta(weeks=args.weeks)
    features = read_features(engine, schemas, product, end=end)
    bar = tqdm(desc="walk-forward", unit="week", file=sys.stderr, leave=False, disable=None)

    def tick(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        result = walk_forward(features, product, start, end, TrainConfig(num_threads=settings.num_threads),
                              retrain_hours=args.retrain_hours, progress=tick)
    finally:
        bar.close()
    out_dir = Path(args.out_dir) if args.out_dir else settings.backtest_dir
    return write_outputs(result, out_dir).summary()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml", description="candlecast ML: train, evaluate, promote, predict, forecast, backtest. "
        "Connection settings come from CANDLECAST_* env vars (see README); the model store from "
        "CANDLECAST_MODEL_STORE (default .local/models).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str, func: Callable[[argparse.Namespace], str]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--product", type=product_id_arg,
                       help="Coinbase product id (default CANDLECAST_PRODUCT or BTC-USD)")
        p.set_defaults(func=func)
        return p

    p = add("train", "train LightGBM and the naive baselines up to a cutoff; store and register them", cmd_train)
    p.add_argument("--cutoff", type=parse_hour, help="UTC hour: every training target lies before it")
    p.add_argument("--end", type=parse_hour, help="without --cutoff: cutoff = END - holdout hours "
                   "(default END: the newest hour in the feature table)")
    p.add_argument("--holdout-hours", type=int, help="hours left for evaluation "
                   "(default CANDLECAST_HOLDOUT_HOURS, 168)")
    p.add_argument("--validation-hours", type=int, default=24 * 28, help="early-stopping split (default 672)")

    for name, help_, func in (
        ("evaluate", "score every stored model on the holdout after the newest training cutoff", cmd_evaluate),
        ("promote", "evaluate, then promote the best model on the holdout and the live record (persistence "
                    "competes)", cmd_promote),
    ):
        p = add(name, help_, func)
        p.add_argument("--end", type=parse_hour, help="UTC end of the holdout window, exclusive "
                       "(default: the newest hour in the feature table)")

    p = add("predict", "forecast next-hour closes with the production model and upsert them", cmd_predict)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--hour", type=parse_hour, help="UTC feature hour (newest closed candle); forecasts hour+1")
    group.add_argument("--start", type=parse_hour, help="first feature hour of a backfill (with --end)")
    group.add_argument("--last", type=int, default=1, help="the newest N feature hours (default 1)")
    p.add_argument("--end", type=parse_hour, help="with --start: end of the backfill, exclusive")

    p = add("forecast", "the hourly step: forecast hour+1 with the production model, or record a labelled "
            "fallback (persistence from the last known close) when the hour's candle is missing; re-run an hour "
            "once its candle arrived to replace its fallback", cmd_forecast)
    p.add_argument("--hour", type=parse_hour, required=True, help="UTC feature hour (the just-closed hour)")
    p.add_argument("--end", type=parse_hour, help="re-run every feature hour from --hour to END, exclusive")

    p = add("backtest", "walk-forward backtest: retrain weekly, forecast every hour, chart vs persistence",
            cmd_backtest)
    p.add_argument("--start", type=parse_hour, help="first forecast hour (default END - WEEKS weeks)")
    p.add_argument("--end", type=parse_hour, help="end, exclusive (default: the newest hour in the feature table)")
    p.add_argument("--weeks", type=int, default=52, help="length without --start (default 52)")
    p.add_argument("--retrain-hours", type=int, default=168, help="retrain every N hours (default 168)")
    p.add_argument("--out-dir", help="where the PNG/CSV/JSON go (default .local/backtest)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        print(args.func(args))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI's contract: one clear line and a non-zero exit, never a traceback
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {type(exc).__name__}: {message}", file=sys.stderr)
        if args.verbose:
            logging.exception("details")
        return 1
    return 0
