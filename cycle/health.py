"""The hourly health check: build the ``product_health`` mart for the cycle's hour and judge its dbt tests.

``dbt build --select product_health`` with ``CANDLECAST_CYCLE_HOUR`` set builds the mart and runs its tests, each with
a severity (``models/marts/health/_health__models.yml``, thresholds in ``dbt_project.yml``'s ``health_*``
vars). A test that fails at ``error`` severity fails the check (``HealthCheckFailed``: the hourly ``health``
step fails, red in Airflow, exit 1 from ``python -m cycle``); one at ``warn`` severity is logged and reported in
the step's summary. Either way the message names the product, the check and the value: each failing test's
compiled SQL (from dbt's ``run_results.json``) is run again, and the health tests return one row per failing
product with a ``violation`` sentence. The time is the caller's: ``cycle_hour`` is the hour the cycle
forecasts (its interval's end).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from candlecast.hours import naive_utc
from candlecast.settings.dbt import HOURLY_DBT_VARS

if TYPE_CHECKING:
    from candlecast.dbt_runner import DbtResult

log = logging.getLogger(__name__)

HEALTH_SELECT: tuple[str, ...] = ("product_health",)


@dataclass(frozen=True)
class Finding:
    """One failing dbt test of the health mart: its name, severity and what it found, per product."""

    test: str
    severity: str  # "error" or "warn"
    failures: int
    violations: tuple[tuple[str, str], ...] = ()  # (product_id, sentence)
    message: str = ""  # dbt's own line, when the failing rows could not be read

    def lines(self) -> list[str]:
        if self.violations:
            return [f"{product}: {sentence} ({self.test}, {self.severity})" for product, sentence in self.violations]
        return [f"{self.test} ({self.severity}): {self.message or f'{self.failures} failing row(s)'}"]


@dataclass(frozen=True)
class HealthReport:
    cycle_hour: datetime
    command: str
    summary: str  # dbt's PASS/WARN/ERROR counts
    errors: tuple[Finding, ...] = ()
    warnings: tuple[Finding, ...] = ()
    statuses: dict[str, str] = field(default_factory=dict)  # product -> ok / warn / error

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_json(self) -> dict[str, Any]:
        return {
            "cycle_hour": self.cycle_hour.isoformat(), "command": self.command, "result": self.summary,
            "statuses": dict(self.statuses),
            "errors": [line for f in self.errors for line in f.lines()],
            "warnings": [line for f in self.warnings for line in f.lines()],
        }


class HealthCheckFailed(RuntimeError):
    """An error-severity health test failed; the first line names every failing product and check."""

    def __init__(self, report: HealthReport) -> None:
        lines = [line for f in report.errors for line in f.lines()]
        warn = [line for f in report.warnings for line in f.lines()]
        text = (f"health check failed at {report.cycle_hour:%Y-%m-%d %H:%M} UTC: " + "; ".join(lines)
                + ("".join(f"\nwarning: {w}" for w in warn)))
        super().__init__(text)
        self.report = report


CYCLE_HOUR_ENV = "CANDLECAST_CYCLE_HOUR"


def cycle_hour_env(cycle_hour: datetime) -> dict[str, str]:
    """The hour for the mart, as naive UTC (what it accepts), in the env var it reads: dbt re-parses only the
    files that read a changed env var, where a changed ``--vars`` would re-parse the whole project every hour
    (and again for the next dbt step without it)."""
    return {CYCLE_HOUR_ENV: f"{naive_utc(cycle_hour):%Y-%m-%d %H:%M}"}


def _failing_rows(env: Mapping[str, str], compiled_sql: str) -> list[tuple[str, str]]:
    """The failing products and their sentences, from a health test's compiled SQL (as the transformer)."""
    from sqlalchemy import text

    from candlecast.db import make_engine
    from candlecast.settings import db_settings

    engine = make_engine(db_settings("transformer", env))
    try:
        with engine.connect() as conn:
            result = conn.execute(text(compiled_sql.replace("%", "%%")))
            columns = list(result.keys())
            rows = result.all()
    finally:
        engine.dispose()
    if "product_id" not in columns or "violation" not in columns:
        return [(str(dict(zip(columns, row, strict=True))), "failing row") for row in rows]
    return [(str(row._mapping["product_id"]), str(row._mapping["violation"])) for row in rows]


def judge(result: DbtResult, env: Mapping[str, str], cycle_hour: datetime) -> HealthReport:
    """Read a finished ``dbt build`` of the health mart: the failing tests by severity, with their rows."""
    from candlecast.dbt_runner import DbtError

    results = result.artifact("run_results.json")["results"]
    broken = [r for r in results if r["status"] in ("error", "skipped")
              or (r["unique_id"].startswith("model.") and r["status"] != "success")]
    if broken or not any(r["unique_id"] == "model.candlecast.product_health" for r in results):
        what = ", ".join(f"{r['unique_id']} {r['status']}: {(r.get('message') or '').strip()}" for r in broken)
        raise DbtError(result.describe(), f"the health mart did not build and test: {what or 'nothing ran'}",
                       result.output)
    errors: list[Finding] = []
    warnings: list[Finding] = []
    for r in results:
        if r["status"] not in ("fail", "warn"):
            continue
        name = r["unique_id"].split(".")[2]
        severity = "error" if r["status"] == "fail" else "warn"
        violations: list[tuple[str, str]] = []
        message = (r.get("message") or "").strip()
        if r.get("compiled_code"):
            try:
                violations = _failing_rows(env, r["compiled_code"])
            except Exception as exc:  # the check failed all the same: report it with dbt's own words
                log.warning("cannot read the failing rows of %s: %s", name, exc)
        finding = Finding(name, severity, int(r.get("failures") or 0), tuple(violations), message)
        (errors if severity == "error" else warnings).append(finding)
    return HealthReport(naive_utc(cycle_hour), result.describe(), result.summary(), tuple(errors), tuple(warnings),
                        _statuses(env, result))


def _statuses(env: Mapping[str, str], result: DbtResult) -> dict[str, str]:
    """Each product's ``status`` in the mart just built (for the step's one-line summary)."""
    from sqlalchemy import text

    from candlecast.db import make_engine
    from candlecast.settings import db_settings

    relation = next((r.get("relation_name") for r in result.artifact("run_results.json")["results"]
                     if r["unique_id"] == "model.candlecast.product_health"), None)
    if not relation:
        return {}
    engine = make_engine(db_settings("transformer", env))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(f"select product_id, status from {relation} order by product_id")).all()
    finally:
        engine.dispose()
    return {str(p): str(s) for p, s in rows}


def check_health(env: Mapping[str, str], cycle_hour: datetime, *, target_path: Path | None = None,
                 log_path: Path | None = None, pass_fds: Sequence[int] = ()) -> HealthReport:
    """Build and test ``product_health`` as of ``cycle_hour``; raise ``HealthCheckFailed`` on an error-severity
    failure (after logging the warnings), else return the report (warnings included)."""
    from candlecast.dbt_runner import run_dbt

    result = run_dbt(["build"], env={**env, **cycle_hour_env(cycle_hour)}, select=HEALTH_SELECT,
                     args=("--vars", json.dumps(HOURLY_DBT_VARS)), target_path=target_path, log_path=log_path,
                     pass_fds=pass_fds, check=False)
    report = judge(result, env, cycle_hour)
    for finding in report.warnings:
        for line in finding.lines():
            log.warning("health warning at %s UTC: %s", f"{report.cycle_hour:%Y-%m-%d %H:%M}", line)
    if not report.ok:
        raise HealthCheckFailed(report)
    return report
