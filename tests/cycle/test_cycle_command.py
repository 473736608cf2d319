"""``python -m cycle`` end to end, as a crontab line runs it: the weekly retrain, then the hourly cycle of one
hour, re-run, and steps that fail. The DAG tests (``tests/dags``) hold the DAGs to the same functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tests.cycle.conftest import BASE, run_cycle
from tests.support import differences, snapshot

pytestmark = pytest.mark.integration

STEPS = {"extract", "features", "predict", "accuracy", "health", "train", "evaluate", "promote"}


def step_lines(stdout: str) -> dict[str, str]:
    """The command's step lines by step name (each starts with it), in their order."""
    return {line.split()[0]: line for line in stdout.splitlines() if line.split() and line.split()[0] in STEPS}


@dataclass
class WatchedRun:
    """A cycle command's run, and which role passwords each of its processes held in its environment."""

    returncode: int
    stdout: str
    stderr: str
    # (command line, roles whose password its environment held) of the command and every process under it
    processes: set[tuple[str, frozenset[str]]]

    def held_by(self, marker: str) -> set[frozenset[str]]:
        return {env for cmd, env in self.processes if marker in cmd}


def run_watched(args: list[str], cycle_env: dict[str, str]) -> WatchedRun:
    """``python -m cycle ARGS`` as cron runs it on the local server: no password exported, the credentials file
    in its place under the local dir, every process of the run sampled from /proc while it goes on."""
    import subprocess
    import sys

    from candlecast.role_env import password_vars
    from candlecast.settings import ROLES, credentials_file
    from tests.cycle.conftest import REPO_ROOT
    from tests.support import ProcessWatch

    env = {k: v for k, v in cycle_env.items() if k not in password_vars() and k != "CANDLECAST_CREDENTIALS_FILE"}
    assert credentials_file(env).is_file()
    proc = subprocess.Popen([sys.executable, "-m", "cycle", *args], env=env, cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watch = ProcessWatch(proc.pid, {role: cycle_env[f"CANDLECAST_{role.upper()}_PASSWORD"] for role in ROLES})
    try:
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        seen = watch.stop()
    return WatchedRun(proc.returncode, stdout, stderr, {(cmd, env) for _, _, cmd, env, _ in seen})


@pytest.fixture(scope="module")
def weekly(cycle_env):
    # The week ending Sunday 2024-01-07 23:00: trains before 2023-12-31 23:00, scores on the week after.
    return run_watched(["--weekly", "--end", "2024-01-07T23:00"], cycle_env)


@pytest.fixture(scope="module")
def hourly(weekly, cycle_env):
    # The interval [12:00, 13:00) UTC, written with an offset: 14:00+01:00 is 13:00 UTC.
    return run_watched(["--end", "2024-01-08T14:00+01:00"], cycle_env)


def test_each_step_of_the_cycles_runs_in_a_process_holding_only_its_roles_password(weekly, hourly) -> None:
    """The cycle command is a launcher: it holds no password in its environment (it reads the credentials file
    when it starts a step); extract runs with the loader's only, the ML steps with the ml role's only, dbt and the
    health check with the transformer's only, and no command line holds any."""
    assert weekly.returncode == 0 and hourly.returncode == 0, weekly.stderr[-2000:] + hourly.stderr[-2000:]
    processes = weekly.processes | hourly.processes
    for step, role in [("extract", "loader"), ("predict", "ml"), ("health", "transformer"), ("train", "ml"),
                       ("evaluate", "ml"), ("promote", "ml")]:
        assert weekly.held_by(f"cycle.run_step {step} ") | hourly.held_by(f"cycle.run_step {step} ") == {
            frozenset({role})}, (step, processes)
    assert {env for cmd, env in processes if "/bin/dbt " in cmd} == {frozenset({"transformer"})}
    assert {env for cmd, env in processes if cmd.endswith("-m cycle --end 2024-01-08T14:00+01:00")} == {frozenset()}


def test_weekly_cycle_trains_scores_and_promotes_a_production_model(weekly, admin_engine) -> None:
    from sqlalchemy import text

    assert weekly.returncode == 0, weekly.stderr[-3000:]
    lines = step_lines(weekly.stdout)
    assert list(lines) == ["features", "train", "evaluate", "promote"]
    assert all(" ok " in line for line in lines.values()), weekly.stdout
    assert "PASS=" in lines["features"] and "ERROR=0" in lines["features"]
    with admin_engine.connect() as conn:
        cutoffs = conn.execute(text(f"select distinct training_cutoff from `{BASE}_ml`.model_registry")).scalars().all()
        production = conn.execute(
            text(f"select model_version from `{BASE}_ml`.model_registry where status = 'production'")).scalars().all()
    assert cutoffs == [datetime(2023, 12, 31, 23)]
    assert len(production) == 1
    assert production[0] in lines["promote"]


def test_hourly_cycle_fetches_the_closed_hour_and_forecasts_the_next(hourly, admin_engine) -> None:
    from sqlalchemy import text

    assert hourly.returncode == 0, hourly.stderr[-3000:]
    header, *_, footer = hourly.stdout.strip().splitlines()
    assert header.startswith("hourly cycle 2024-01-08 12:00..2024-01-08 13:00 UTC")
    lines = step_lines(hourly.stdout)
    # The hourly DAG's steps, in its order, each with its outcome and timing on one line.
    assert list(lines) == ["extract", "features", "predict", "accuracy", "health"]
    assert all(line.split()[1] == "ok" and line.split()[3] == "s" for line in lines.values()), hourly.stdout
    # The incremental extract fetched the new hour and re-fetched the trailing day, which was unchanged.
    assert "1 inserted, 0 updated, 23 unchanged" in lines["extract"]
    assert "2024-01-08 13:00 UTC: model btc-usd-" in lines["predict"]
    assert "(+2 shadow forecast(s))" in lines["predict"]  # the other two registered models, beside production
    # A healthy hour: fresh data, every hour since the first forecast served, too few realized to judge skill.
    assert "BTC-USD ok at 2024-01-08 13:00 UTC" in lines["health"]
    assert footer.startswith("hourly cycle 2024-01-08 12:00..2024-01-08 13:00 UTC: ok")
    with admin_engine.connect() as conn:
        newest = conn.execute(text(f"select max(bucket_start) from `{BASE}_raw`.candles")).scalar()
        features = conn.execute(text(f"select max(hour) from `{BASE}_marts`.fct_candle_features")).scalar()
        targets = conn.execute(text(f"select target_hour from `{BASE}_ml`.predictions "
                                    "where role = 'production'")).scalars().all()
        scored = conn.execute(text(f"select count(*) from `{BASE}_marts`.fct_prediction_accuracy")).scalar()
    assert newest == datetime(2024, 1, 8, 12)
    assert features == datetime(2024, 1, 8, 12)
    assert targets == [datetime(2024, 1, 8, 13)]
    assert scored >= 1


def test_rerunning_an_hour_changes_no_table(hourly, cycle_env, admin_engine) -> None:
    assert hourly.returncode == 0, hourly.stderr[-3000:]
    before = snapshot(admin_engine, BASE)
    again = run_cycle(["--end", "2024-01-08T13:00"], cycle_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 inserted, 0 updated" in step_lines(again.stdout)["extract"]
    assert differences(snapshot(admin_engine, BASE), before, ("re-run", "first run")) == []


def test_a_cycle_killed_during_dbt_holds_off_the_next_until_its_dbt_is_gone_and_a_rerun_heals(
        hourly, cycle_env, admin_engine) -> None:
    """SIGKILL leaves the cycle's dbt running (an orphan writing the feature tables); the cycle lock, inherited
    by dbt, keeps the next cycle off those tables until it is gone. Re-running the hour then gives exactly the
    tables of a run that was never killed."""
    import fcntl
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from cycle.run import lock_path
    from tests.cycle.conftest import REPO_ROOT

    before = snapshot(admin_engine, BASE)
    proc = subprocess.Popen([sys.executable, "-m", "cycle", "--end", "2024-01-08T13:00"], env=cycle_env,
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent, dbt, deadline = psutil.Process(proc.pid), None, time.monotonic() + 120
    def command_line(child: psutil.Process) -> str:
        try:
            return " ".join(child.cmdline())
        except psutil.Error:  # a step's process that just ended
            return ""

    while dbt is None and time.monotonic() < deadline and proc.poll() is None:
        dbt = next((c for c in parent.children(recursive=True) if "/bin/dbt " in command_line(c)), None)
        time.sleep(0.02)
    assert dbt is not None, "the cycle never started dbt"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert dbt.is_running()  # dbt takes seconds to start; it was found within 20 ms of appearing
    with open(lock_path(cycle_env)) as fh:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        dbt.wait(timeout=300)
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the orphan is gone
        fcntl.flock(fh, fcntl.LOCK_UN)
    again = run_cycle(["--end", "2024-01-08T13:00"], cycle_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert differences(snapshot(admin_engine, BASE), before, ("after kill + re-run", "before")) == []


def test_a_range_runs_the_hourly_cycle_of_each_interval_in_turn(hourly, cycle_env, admin_engine) -> None:
    from sqlalchemy import text

    proc = run_cycle(["--start", "2024-01-08T13:00", "--end", "2024-01-08T15:00"], cycle_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    headers = [line for line in proc.stdout.splitlines() if line.endswith("products BTC-USD")]
    assert headers == ["hourly cycle 2024-01-08 13:00..2024-01-08 14:00 UTC, products BTC-USD",
                       "hourly cycle 2024-01-08 14:00..2024-01-08 15:00 UTC, products BTC-USD"]
    assert proc.stdout.strip().splitlines()[-1].startswith("2 hourly cycles ok")
    with admin_engine.connect() as conn:
        targets = conn.execute(text(f"select target_hour from `{BASE}_ml`.predictions "
                                    "where role = 'production' order by 1")).scalars().all()
    assert targets == [datetime(2024, 1, 8, h) for h in (13, 14, 15)]


def test_an_api_outage_fails_the_cycle_at_extract_and_the_hour_still_gets_a_labelled_fallback(
        hourly, cycle_env, replay, admin_engine) -> None:
    from sqlalchemy import text

    from tools.replay import Fault

    before = snapshot(admin_engine, BASE)
    # The cycle for [16:00, 17:00) runs at 17:05, inside an API outage from 17:00 to 18:00 (503 to everything).
    replay.set_clock(datetime(2024, 1, 8, 17, 5, tzinfo=UTC))
    replay.inject(Fault.outage(datetime(2024, 1, 8, 17, tzinfo=UTC), datetime(2024, 1, 8, 18, tzinfo=UTC)))
    try:
        proc = run_cycle(["--end", "2024-01-08T17:00"], {**cycle_env, "CANDLECAST_EXTRACT_MAX_ATTEMPTS": "1"})
    finally:
        replay.set_clock(None)
        replay.faults.clear()
    # Failed, for cron's mail and monitoring, naming the extract ...
    assert proc.returncode == 1, proc.stdout
    assert "hourly cycle 2024-01-08 16:00..2024-01-08 17:00 UTC failed at step extract:" in proc.stderr
    lines = step_lines(proc.stdout)
    assert [(name, line.split()[1]) for name, line in lines.items()] == [
        ("extract", "failed"), ("features", "ok"), ("predict", "ok"), ("accuracy", "ok"), ("health", "ok")]
    # ... and the hour is not silent: a persistence fallback saying why, kept out of the model's predictions.
    assert "FALLBACK" in lines["predict"] and "extract step failed" in lines["predict"]
    with admin_engine.connect() as conn:
        outcome = conn.execute(text(f"select outcome, reason_code, reason, base_hour "
                                    f"from `{BASE}_ml`.forecast_outcomes where target_hour = '2024-01-08 17:00'")).one()
        model_rows = conn.execute(text(f"select count(*) from `{BASE}_ml`.predictions "
                                       "where target_hour = '2024-01-08 17:00'")).scalar()
        served = conn.execute(text(f"select outcome from `{BASE}_marts`.fct_forecast_outcomes "
                                   "where target_hour = '2024-01-08 17:00'")).scalars().all()
    assert (outcome.outcome, outcome.reason_code) == ("fallback", "candle_missing")
    assert "extract step failed" in outcome.reason
    assert outcome.base_hour == datetime(2024, 1, 8, 14)  # the newest candle stored before the outage
    assert model_rows == 0
    assert served == ["fallback"]  # the accuracy step ran after the failure too
    assert snapshot(admin_engine, BASE)["_raw.candles"] == before["_raw.candles"]


def test_a_failing_dbt_step_exits_non_zero_naming_it_and_the_forecast_still_gets_an_outcome(
        hourly, cycle_env, admin_engine) -> None:
    """dbt cannot be started: the extract runs, the feature build fails, predict still records the hour's
    outcome, the accuracy build fails too; the cycle fails naming the first failed step."""
    from sqlalchemy import text

    proc = run_cycle(["--end", "2024-01-08T18:00"], {**cycle_env, "CANDLECAST_DBT_EXECUTABLE": "/nonexistent/dbt"})
    assert proc.returncode == 1
    assert "hourly cycle 2024-01-08 17:00..2024-01-08 18:00 UTC failed at step features: DbtError" in proc.stderr
    lines = step_lines(proc.stdout)
    assert [(name, line.split()[1]) for name, line in lines.items()] == [
        ("extract", "ok"), ("features", "failed"), ("predict", "ok"), ("accuracy", "failed"), ("health", "failed")]
    with admin_engine.connect() as conn:
        outcome = conn.execute(text(f"select outcome, reason from `{BASE}_ml`.forecast_outcomes "
                                    "where target_hour = '2024-01-08 18:00'")).one()
    # The candle is in raw but the features were not rebuilt: no model forecast from stale rows.
    assert outcome.outcome == "fallback" and "features step failed" in outcome.reason


def test_no_password_reaches_the_cycles_output_or_dbt_logs(weekly, hourly, cycle_env) -> None:
    from candlecast.settings import ROLES
    from cycle.steps import dbt_target_dir

    passwords = [cycle_env[f"CANDLECAST_{role.upper()}_PASSWORD"] for role in ROLES]
    files = [p for p in dbt_target_dir(cycle_env).rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in files), "the cycle's dbt logs should be there to check"
    for text_ in (weekly.stdout, weekly.stderr, hourly.stdout, hourly.stderr):
        assert not any(pw in text_ for pw in passwords)
    assert [str(p) for p in files if any(pw.encode() in p.read_bytes() for pw in passwords)] == []
