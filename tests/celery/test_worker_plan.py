"""How ``make airflow EXECUTOR=celery WORKERS=N`` lays its workers out (pure: no process is started here): each
worker has a local folder, a log server port and a Celery node name of its own, takes the queues given for it (the
default queue otherwise), and records its own name as the hostname of the tasks it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from candlecast.airflow_celery import celery_env, parse_queues, plan_workers, worker_hostname


def test_each_worker_has_its_own_folder_port_queues_and_name(tmp_path: Path) -> None:
    workers = plan_workers(2, "retrain hourly,default", tmp_path, 18254)
    assert [(w.name, w.queues, w.log_server_port) for w in workers] == [
        ("worker-1", ("retrain",), 18254), ("worker-2", ("hourly", "default"), 18255)]
    assert len({w.local_dir for w in workers}) == 2
    assert all(w.local_dir.parent == tmp_path / "workers" for w in workers)
    env = workers[1].env({"CANDLECAST_LOCAL_DIR": str(tmp_path), "X": "kept"})
    assert env["CANDLECAST_LOCAL_DIR"] == str(tmp_path / "workers" / "worker-2")
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "18255" and env["X"] == "kept"
    argv = workers[1].argv()
    assert argv[argv.index("--queues") + 1] == "hourly,default"
    assert argv[argv.index("--celery-hostname") + 1] == "worker-2@%h"


def test_workers_without_a_queue_list_take_the_default_queue_and_too_many_lists_are_refused() -> None:
    assert parse_queues("", 2) == [("default",), ("default",)]
    assert parse_queues("retrain", 3) == [("retrain",), ("default",), ("default",)]
    with pytest.raises(ValueError, match="names 3 workers' queues"):
        parse_queues("a b c", 2)
    with pytest.raises(ValueError, match="at least one worker"):
        plan_workers(0, "", Path("/tmp"), 1)


def test_the_celery_environment_names_the_broker_by_a_command_never_its_password(monkeypatch) -> None:
    env = celery_env({"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}, "cat /x/broker_url")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL_CMD"] == "cat /x/broker_url"
    assert "AIRFLOW__CELERY__BROKER_URL" not in env
    monkeypatch.setenv("CANDLECAST_WORKER_NAME", "worker-2")
    assert worker_hostname() == "worker-2"
