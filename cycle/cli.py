"""``python -m cycle``: one hourly cycle (or ``--weekly``: the retrain), each step on one line as it finishes.

The only place the cycle reads the clock: without ``--end``, the end is the current hour, so the interval is
the hour that closed last. Exit 0 when every step succeeded; 1 with ``error: ... failed at step NAME: ...``
on stderr when one failed (NAME the first; the hourly cycle's later steps still run, so a failed extract
still records the hour's forecast outcome, the weekly one's do not); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from candlecast.hours import HOUR, cli_time, floor_hour
from candlecast.inputs import product_id_arg
from candlecast.settings import SettingsError
from cycle.context import Interval, RunContext
from cycle.run import WEEK, CycleError, StepFailed, StepOutcome, run_hourly, run_weekly
from cycle.steps import HEALTH_STEP, HOURLY_STEPS, WEEKLY_STEPS

EPILOG = """\
times are ISO 8601 (2024-01-08T13:00, 2024-01-08T14:00+01:00); without an offset they are UTC. --end is the
end of the interval, exclusive, floored to the hour: --end 2024-01-08T13:00 fetches the hour 12:00-13:00 and
forecasts 13:00-14:00, as the hourly DAG's run with that data interval end does. Re-running an --end changes
nothing; a later run catches up what an earlier one could not do. --start S --end E runs the hourly cycles of
[S, S+1h) ... [E-1h, E) in turn (stopping at the first failure, but going on after a failed health check),
e.g. to re-run the forecasts of hours an outage left with a fallback.

settings (env vars, over the local credentials file): the database's CANDLECAST_DB_* and per-role
CANDLECAST_{LOADER,TRANSFORMER,ML}_*, COINBASE_API_URL, CANDLECAST_EXTRACT_PRODUCTS, CANDLECAST_MODEL_STORE,
CANDLECAST_DBT_EXECUTABLE, CANDLECAST_HOLDOUT_HOURS (see the README).

crontab (UTC):
  5 * * * *   cd /srv/candlecast && .venv/bin/python -m cycle >>.local/cycle.log 2>&1
  35 23 * * 0 cd /srv/candlecast && .venv/bin/python -m cycle --weekly >>.local/cycle.log 2>&1
"""


# ISO 8601, with or without an offset (none: UTC): the rule of every CLI (candlecast.hours).
parse_time = cli_time()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cycle",
        description="Run the hourly cycle (extract → dbt features → predict → dbt accuracy → health) or, with "
                    "--weekly, the retrain (dbt features → train → evaluate → promote), without Airflow.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--end", type=parse_time,
                        help="end of the interval, exclusive (default: the current hour, i.e. the last closed hour)")
    parser.add_argument("--start", type=parse_time,
                        help="run the hourly cycle of every interval from here to --end, one hour after the other "
                             "(re-running hours after an outage, say)")
    parser.add_argument("--weekly", action="store_true", help="run the weekly retrain instead of the hourly cycle")
    parser.add_argument("--product", action="append", dest="products", metavar="ID", type=product_id_arg,
                        help="product id, repeatable (default: CANDLECAST_EXTRACT_PRODUCTS or BTC-USD)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step does")
    return parser


def cycle_end(requested: datetime | None, now: datetime) -> datetime:
    """The interval's end: ``requested`` floored to the hour, or the current hour (the last closed hour ends
    there). An end after the current hour would take the still-open hour for closed and store its partial
    candle, so it is refused."""
    current = floor_hour(now)
    if requested is None:
        return current
    end = floor_hour(requested)
    if end > current:
        raise SettingsError(f"--end {end:%Y-%m-%d %H:%M} UTC is after the current hour {current:%Y-%m-%d %H:%M} "
                            "UTC: the hours before it have not all closed yet")
    return end


def cycle_ends(start: datetime | None, end: datetime | None, now: datetime, weekly: bool = False) -> list[datetime]:
    """The ends of the cycles to run: one (``end``), or with ``start`` every hour of ``[start, end)`` in turn,
    as an Airflow backfill of those intervals would."""
    last = cycle_end(end, now)
    if start is None:
        return [last]
    if weekly:
        raise SettingsError("--start runs consecutive hourly cycles; it does not go with --weekly")
    first = floor_hour(start)
    if first >= last:
        raise SettingsError(f"--start {first:%Y-%m-%d %H:%M} UTC must be before the end {last:%Y-%m-%d %H:%M} UTC")
    return [first + (i + 1) * HOUR for i in range(int((last - first) / HOUR))]


def _print_line(outcome: StepOutcome) -> None:
    print(outcome.line(), flush=True)


OK, FAILED, UNHEALTHY = 0, 1, 2  # what _run_one reports: UNHEALTHY is a cycle whose only failed step is health


def _run_one(name: str, end: datetime, ctx: RunContext) -> int:
    """One cycle with its header, step lines and footer: OK, or FAILED (UNHEALTHY when the health check was the
    only step to fail) after saying which step failed."""
    steps, run = (WEEKLY_STEPS, run_weekly) if name == "weekly" else (HOURLY_STEPS, run_hourly)
    interval = Interval(end - WEEK, end) if name == "weekly" else Interval.hour_ending(end)
    print(f"{name} cycle {interval}, products {', '.join(ctx.products)}", flush=True)
    try:
        result = run(end, ctx, on_step=_print_line)
    except StepFailed as exc:
        ran = {o.name for o in exc.outcomes}
        for later in steps:
            if later.name not in ran:
                print(f"{later.name:<9} {'-':<6} {'':>8}  not run: {exc.step} failed", flush=True)
        print(f"error: {exc}", file=sys.stderr)
        cause = exc.__cause__
        details = str(cause).strip().splitlines()[1:] if cause else []
        if details:
            print("\n".join(details[-40:]), file=sys.stderr)
        failed = [o.name for o in exc.outcomes if not o.ok]
        return UNHEALTHY if failed == [HEALTH_STEP] else FAILED
    except CycleError as exc:
        print(f"error: {name} cycle {interval}: {exc}", file=sys.stderr)
        return FAILED
    print(f"{name} cycle {interval}: ok, {len(result.outcomes)} steps in {result.seconds:.1f} s", flush=True)
    return OK


def main(argv: list[str] | None = None, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        ends = cycle_ends(args.start, args.end, now(), weekly=args.weekly)
    except SettingsError as exc:
        parser.error(str(exc))
    name = "weekly" if args.weekly else "hourly"
    try:
        ctx = RunContext.resolve(products=args.products)
    except (SettingsError, ValueError, RuntimeError) as exc:
        print(f"error: {name} cycle: settings: {exc}", file=sys.stderr)
        return 1
    unhealthy = 0
    for end in ends:
        outcome = _run_one(name, end, ctx)
        if outcome == FAILED:
            return 1
        # Only the health verdict failed: the hour's data work is done, so a range goes on (re-running hours
        # while the production model is losing to persistence must not stop at the first), and exits 1 at the end.
        unhealthy += outcome == UNHEALTHY
    if len(ends) > 1:
        span = f"{ends[0] - HOUR:%Y-%m-%d %H:%M}..{ends[-1]:%Y-%m-%d %H:%M} UTC"
        if unhealthy:
            print(f"{len(ends)} hourly cycles run, {span}: {unhealthy} failed their health check", flush=True)
        else:
            print(f"{len(ends)} hourly cycles ok, {span}", flush=True)
    return 1 if unhealthy else 0
