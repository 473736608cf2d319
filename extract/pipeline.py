"""Backfill and incremental extraction: fetch each window, validate it, commit it in one transaction.

These are the library entry points the CLI, the demo and the Airflow DAGs call. Every time comes from the
caller: ``end`` is the exclusive end of the hours to fetch, and ``now`` (when given) keeps the still-open
hour out however late ``end`` is. Windows go oldest first and each commits on its own, so a failure leaves
complete windows behind it and nothing of the failed one; the run log says which window failed and why.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from candlecast.hours import HOUR, floor_hour, to_utc
from candlecast.settings import ExtractSettings, Schemas
from extract import load
from extract.coinbase import CoinbaseClient
from extract.errors import ExtractError, LoadError, NeedsBackfill, NothingToResume, TooFarBehind
from extract.schema import ensure_raw_tables
from extract.validate import validate_window
from extract.windows import Window, clamp_end, split_windows

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowReport:
    product_id: str
    window: Window
    received: int
    counts: load.UpsertCounts
    rejected: int
    gaps: tuple[datetime, ...]


@dataclass
class ExtractResult:
    run_id: str
    product_id: str
    mode: str
    span: Window
    windows: int = 0
    received: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    outside: int = 0
    duplicates: int = 0
    gaps: list[datetime] = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    duration_s: float = 0.0

    @property
    def requested(self) -> int:
        return self.span.hours

    @property
    def stored(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def add(self, report: WindowReport, outside: int, duplicates: int) -> None:
        self.windows += 1
        self.received += report.received
        self.inserted += report.counts.inserted
        self.updated += report.counts.updated
        self.unchanged += report.counts.unchanged
        self.rejected += report.rejected
        self.outside += outside
        self.duplicates += duplicates
        self.gaps.extend(report.gaps)

    def summary(self) -> str:
        gaps = describe_hours(self.gaps)
        return (
            f"{self.product_id} {self.mode} {self.span}: {self.status}; {self.requested} hours requested, "
            f"{self.received} received, {self.inserted} inserted, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.rejected} rejected, {len(self.gaps)} missing hours"
            f"{' (' + gaps + ')' if gaps else ''} in {self.duration_s:.1f}s"
        )


class RunFailed(ExtractError):
    """A run stopped at a window; ``result`` holds what was committed before it."""

    def __init__(self, message: str, result: ExtractResult) -> None:
        super().__init__(message)
        self.result = result


def describe_hours(hours: Iterable[datetime], limit: int = 4) -> str:
    """Consecutive hours collapsed into ranges: '2023-03-04 17:00..20:00 UTC'."""
    ordered = sorted(hours)
    if not ordered:
        return ""
    runs: list[tuple[datetime, datetime]] = []
    for hour in ordered:
        if runs and hour - runs[-1][1] == HOUR:
            runs[-1] = (runs[-1][0], hour)
        else:
            runs.append((hour, hour))
    parts = []
    for first, last in runs[:limit]:
        if first == last:
            parts.append(f"{first:%Y-%m-%d %H:%M}")
        elif first.date() == last.date():
            parts.append(f"{first:%Y-%m-%d %H:%M}..{last:%H:%M}")
        else:
            parts.append(f"{first:%Y-%m-%d %H:%M}..{last:%Y-%m-%d %H:%M}")
    more = f" and {len(runs) - limit} more runs" if len(runs) > limit else ""
    return ", ".join(parts) + " UTC" + more


def _extract_span(
    product_id: str,
    span: Window,
    mode: str,
    *,
    engine: Engine,
    schemas: Schemas,
    settings: ExtractSettings,
    client: CoinbaseClient,
    progress: Callable[[WindowReport], None] | None,
) -> ExtractResult:
    from sqlalchemy.exc import SQLAlchemyError

    result = ExtractResult(run_id=str(uuid.uuid4()), product_id=product_id, mode=mode, span=span)
    with ExitStack() as lifetime:
        began = time.monotonic()
        try:
            # The lock first, then the row: a `running` row without a held lock always means its owner is gone.
            lifetime.enter_context(load.run_lock(engine, result.run_id))
            abandoned = load.abandon_orphaned_runs(engine, schemas, found_by=result.run_id)
            load.start_run(engine, schemas, result.run_id, product_id, mode, span)
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            raise LoadError(f"{product_id} {mode} {span}: cannot write the run log in {schemas.raw}: {cause}") from exc
        for run_id in abandoned:
            log.warning("run %s was still `running` with its owner gone: marked abandoned", run_id)
        _run_windows(result, began, engine=engine, schemas=schemas, settings=settings, client=client,
                     progress=progress)
    return result


def _run_windows(
    result: ExtractResult,
    began: float,
    *,
    engine: Engine,
    schemas: Schemas,
    settings: ExtractSettings,
    client: CoinbaseClient,
    progress: Callable[[WindowReport], None] | None,
) -> None:
    """Fetch, validate and commit each window of a started run into ``result``; record its outcome."""
    from sqlalchemy.exc import SQLAlchemyError

    product_id, mode, span = result.product_id, result.mode, result.span
    try:
        for window in split_windows(span):
            elements = client.fetch_candles(product_id, window)
            checked = validate_window(product_id, window, elements)
            rejected_hours = {r.bucket_start for r in checked.rejects if r.bucket_start is not None}
            valid_hours = {c.bucket_start for c in checked.candles}
            gaps = tuple(h for h in window.hour_starts() if h not in valid_hours and h not in rejected_hours)
            try:
                with engine.begin() as conn:
                    counts = load.upsert_candles(conn, schemas, checked.candles, settings.batch_size)
                    load.insert_rejects(conn, schemas, result.run_id, checked.rejects)
                    load.add_window_counts(
                        conn, schemas, result.run_id, checked.received, counts, len(checked.rejects), len(gaps)
                    )
            except SQLAlchemyError as exc:
                cause = getattr(exc, "orig", None) or exc
                raise LoadError(
                    f"{product_id} window {window}: database write failed, window rolled back: {cause}"
                ) from exc
            for reject in checked.rejects:
                log.warning("%s: rejected %s: %s", product_id, reject.raw_payload[:200], reject.reason)
            report = WindowReport(product_id, window, checked.received, counts, len(checked.rejects), gaps)
            result.add(report, checked.outside, checked.duplicates)
            if progress is not None:
                progress(report)
    except Exception as exc:
        # Whatever stopped the run, its log row says so before the error goes up (a bug included).
        message = str(exc) if isinstance(exc, ExtractError) else f"{product_id} {mode}: {type(exc).__name__}: {exc}"
        result.status, result.error = "failed", message
        result.duration_s = time.monotonic() - began
        try:
            load.finish_run(engine, schemas, result.run_id, "failed", result.duration_s, message[:10_000])
        except SQLAlchemyError as log_exc:  # the database itself may be what failed; the first error matters
            log.warning("could not mark run %s failed: %s", result.run_id, log_exc)
        if isinstance(exc, ExtractError):
            raise RunFailed(message, result) from exc
        raise

    result.status = "success"
    result.duration_s = time.monotonic() - began
    try:
        load.finish_run(engine, schemas, result.run_id, "success", result.duration_s)
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise LoadError(
            f"{product_id} {mode} {span}: every window is committed, but the run log could not say so: {cause}"
        ) from exc
    if result.gaps:
        log.info("%s: the API has no candle for %s (left out, not invented)", product_id, describe_hours(result.gaps))


def _prepare(engine: Engine, schemas: Schemas) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        ensure_raw_tables(engine, schemas)
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise LoadError(f"cannot create or check the raw tables in {schemas.raw}: {cause}") from exc


def backfill(
    product_id: str,
    start: datetime,
    end: datetime,
    *,
    engine: Engine,
    schemas: Schemas,
    settings: ExtractSettings,
    now: datetime | None = None,
    client: CoinbaseClient | None = None,
    progress: Callable[[WindowReport], None] | None = None,
) -> ExtractResult:
    """Fetch and store the closed hours ``[start, end)`` of one product (hours floored, UTC).

    ``now``, when given, moves ``end`` back to the last closed hour. Raises ``RunFailed`` (an
    ``ExtractError``) naming the product and window when a window cannot be fetched or stored.
    """
    first = floor_hour(start)
    if floor_hour(end) < first:
        raise ExtractError(f"{product_id}: end {to_utc(end):%Y-%m-%d %H:%M} is before start {first:%Y-%m-%d %H:%M}")
    span = Window(first, max(first, clamp_end(end, now)))
    _prepare(engine, schemas)
    own_client = client is None
    client = client or CoinbaseClient(settings)
    try:
        return _extract_span(
            product_id, span, "backfill", engine=engine, schemas=schemas, settings=settings, client=client,
            progress=progress,
        )
    finally:
        if own_client:
            client.close()


def _iso(moment: datetime) -> str:
    return f"{to_utc(moment):%Y-%m-%dT%H:%M}"


def incremental_span(
    product_id: str,
    stored: tuple[datetime | None, datetime | None],
    stop: datetime,
    settings: ExtractSettings,
    initial_start: datetime | None = None,
) -> Window:
    """The hours an incremental run fetches for one product: catch-up plus the trailing re-fetch window.

    ``stored`` is the product's first and newest stored hour; ``stop`` the exclusive end (the open hour
    already left out). The span runs from the earlier of "the hour after the newest stored one" and
    "``refetch_hours`` before ``stop``" up to ``stop``, never before the first stored hour (re-fetching must
    not quietly extend a product's history backwards). Raises ``TooFarBehind`` when more than
    ``max_catchup_hours`` are missing after the newest stored hour, and ``NothingToResume`` for a product
    with nothing stored and no ``initial_start``: both name the backfill to run.
    """
    first, last = (to_utc(h) if h is not None else None for h in stored)
    if first is None or last is None:
        if initial_start is not None:
            begin = floor_hour(initial_start)
            return Window(begin, max(begin, stop))
        year_ago = stop - 365 * 24 * HOUR
        raise NothingToResume(
            f"{product_id}: no candles stored yet; run a backfill first (the features need at least 8 days), "
            f"e.g. `python -m extract backfill --product {product_id} --start {_iso(year_ago)} --end {_iso(stop)}`, "
            "or give an initial start (--initial-start)"
        )
    behind = int((stop - (last + HOUR)) / HOUR)
    if behind > settings.max_catchup_hours:
        raise TooFarBehind(
            f"{product_id}: the newest stored hour is {last:%Y-%m-%d %H:%M} UTC, {behind} hours before the end "
            f"{stop:%Y-%m-%d %H:%M} UTC; an incremental run catches up at most {settings.max_catchup_hours} "
            f"(CANDLECAST_EXTRACT_MAX_CATCHUP_HOURS). Run a backfill: `python -m extract backfill --product "
            f"{product_id} --start {_iso(last + HOUR)} --end {_iso(stop)}`",
            Window(last + HOUR, stop),
        )
    begin = max(first, min(last + HOUR, stop - settings.refetch_hours * HOUR))
    begin = min(begin, stop)
    return Window(begin, stop)


def _record_refusal(engine: Engine, schemas: Schemas, product_id: str, refusal: TooFarBehind) -> None:
    """A failed row in the run log for a product too far behind, so the tables show it, not only the task log."""
    from sqlalchemy.exc import SQLAlchemyError

    run_id = str(uuid.uuid4())
    try:
        load.start_run(engine, schemas, run_id, product_id, "incremental", refusal.missing)
        load.finish_run(engine, schemas, run_id, "failed", 0.0, str(refusal))
    except SQLAlchemyError as exc:
        log.warning("could not record in the run log that %s is too far behind: %s", product_id, exc)


def incremental(
    products: Iterable[str],
    end: datetime,
    *,
    engine: Engine,
    schemas: Schemas,
    settings: ExtractSettings,
    now: datetime | None = None,
    initial_start: datetime | None = None,
    client: CoinbaseClient | None = None,
    progress: Callable[[WindowReport], None] | None = None,
) -> list[ExtractResult]:
    """Bring every product up to ``end`` (exclusive; the open hour never), healing what earlier runs missed.

    Each product's span (``incremental_span``) covers every hour after its newest stored one, up to
    ``settings.max_catchup_hours`` of them (after an outage, say), and re-fetches the trailing
    ``settings.refetch_hours`` before ``end``: a candle the API published late, or corrected, lands on the next
    run and is counted inserted or updated; unchanged ones are left alone. Hours the API still leaves out are
    reported as gaps, again on each run that covers them. A product with nothing stored starts at
    ``initial_start``, or fails with ``NothingToResume``. Every product is attempted; if any failed,
    ``ExtractError`` lists them after the others have been stored: ``NeedsBackfill`` when each failed one is
    too far behind or has nothing stored (a retry cannot help).
    """
    from sqlalchemy.exc import SQLAlchemyError

    _prepare(engine, schemas)
    stop = clamp_end(end, now)
    own_client = client is None
    client = client or CoinbaseClient(settings)
    results: list[ExtractResult] = []
    failures: list[str] = []
    needs_backfill = 0
    try:
        for product_id in products:
            try:
                stored = load.stored_range(engine, schemas, product_id)
            except SQLAlchemyError as exc:
                cause = getattr(exc, "orig", None) or exc
                failures.append(f"{product_id}: cannot read its newest stored hour from {schemas.raw}: {cause}")
                continue
            try:
                span = incremental_span(product_id, stored, stop, settings, initial_start)
            except TooFarBehind as exc:
                _record_refusal(engine, schemas, product_id, exc)
                failures.append(str(exc))
                needs_backfill += 1
                continue
            except NothingToResume as exc:
                failures.append(str(exc))
                needs_backfill += 1
                continue
            except ExtractError as exc:
                failures.append(str(exc))
                continue
            try:
                results.append(_extract_span(
                    product_id, span, "incremental", engine=engine, schemas=schemas, settings=settings,
                    client=client, progress=progress,
                ))
            except RunFailed as exc:
                results.append(exc.result)
                failures.append(str(exc))
    finally:
        if own_client:
            client.close()
    if failures:
        message = "; ".join(failures)
        if len(failures) > 1:
            message = f"{len(failures)} products failed: {message}"
        # Only a backfill helps these: a scheduler that retried would block its queue for the whole retry ladder.
        raise NeedsBackfill(message) if needs_backfill == len(failures) else ExtractError(message)
    return results
