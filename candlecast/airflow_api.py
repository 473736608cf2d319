"""A small client of a local Airflow's REST API (v2) as its admin user (the simple auth manager's generated
password): what the benchmark, the tests and an operator's script use to trigger and watch runs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from candlecast.airflow_local import LocalAirflow


class AirflowApiError(RuntimeError):
    """The API answered with an error status; the message names the call and quotes the answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class AirflowApi:
    def __init__(self, airflow: LocalAirflow) -> None:
        self.base = airflow.url
        password = json.loads(airflow.password_file.read_text())["admin"]
        self.token = self.call("POST", "/auth/token", {"username": "admin", "password": password},
                               auth=False)["access_token"]

    def call(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        """The JSON answer of ``method path``; a 503 (the metadata database busy or restarting: the API server
        says to try again) is retried for up to about 20 s."""
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        for attempt in range(10):
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                if exc.code != 503 or attempt == 9:
                    raise AirflowApiError(exc.code, f"Airflow API {method} {path}: HTTP {exc.code}: "
                                                    f"{exc.read().decode(errors='replace')[:500]}") from exc
                time.sleep(2)
        raise AssertionError("unreachable")

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body)

    def wait_for_dag(self, dag_id: str, timeout: float = 240) -> None:
        """Until the DAG processor's first pass over the DAG folder has registered ``dag_id``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get(f"/api/v2/dags/{dag_id}")
                return
            except AirflowApiError as exc:
                if exc.code != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float, state: str = "queued") -> str:
        """The run's state once it has ended (``success`` or ``failed``), or as it stands after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while state not in ("success", "failed") and time.monotonic() < deadline:
            time.sleep(3)
            state = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
        return state
