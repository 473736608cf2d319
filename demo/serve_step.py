"""The last step of `make demo`: the health mart, then the read API and dashboard answer over HTTP on the demo's
marts, then how to open them (`make serve`).

The app is the one `make serve` runs (``serve.app.create_app``, as the reader role), started here in a thread
on a free port for the two requests, so the demo never holds the port `make serve` wants.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_health_step() -> str:
    """dbt run of the health mart (``product_health``, what /v1/health and the dashboard read), as the transformer.

    ``run``, not ``build``: the demo shows the mart's verdict; failing on it is the hourly cycle's job.
    """
    from candlecast.dbt_runner import run_dbt

    return f"dbt: {run_dbt(['run'], env=os.environ, select=['tag:health']).summary()}"


def serve_step(env: Mapping[str, str] | None = None) -> str:
    import httpx

    from candlecast.settings import api_settings, db_settings
    from serve.app import create_app
    from serve.server import ThreadedServer

    settings = api_settings(env)
    app = create_app(settings, db_settings("reader", env))
    with ThreadedServer(app, _free_port()) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        latest = client.get("/v1/forecasts/latest")
        latest.raise_for_status()
        page = client.get("/")
        page.raise_for_status()
        health = client.get("/v1/health").json()
    lines = []
    for f in latest.json()["forecasts"]:
        price = f"${f['predicted_close']:,.2f}" if f["predicted_close"] is not None else "no price"
        band = f" (80%: ${f['lower_80']:,.2f} .. ${f['upper_80']:,.2f})" if f["lower_80"] is not None else ""
        served = "fallback" if f["is_fallback"] else f"model {f['model_version']}"
        lines.append(f"GET /v1/forecasts/latest: {f['product_id']} {f['target_hour']}: {price}{band}, {served}")
    lines.append(f"GET /: the dashboard, {len(page.content):,} bytes; GET /v1/health: {health['status']}"
                 + (" (the bundled candles end in January 2024: stale against today's clock, as it should say)"
                    if health["status"] == "error" else ""))
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    lines.append(f"open the dashboard: run `make serve`, then http://{host}:{settings.port}/ "
                 f"(API docs http://{host}:{settings.port}/docs; JSON under /v1, see the README's Serving section)")
    return "\n".join(lines)
