"""``python -m serve``: the read API and dashboard on ``CANDLECAST_API_HOST:CANDLECAST_API_PORT`` (127.0.0.1:8090).

Run it as the reader role, so the process holds that role's password and no other:

    python -m candlecast.withenv reader .venv/bin/python -m serve          # what `make serve` runs
"""

from __future__ import annotations

import argparse
import logging
import sys

from candlecast.settings import SettingsError, api_settings, db_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__.split("\n")[0])
    parser.add_argument("--host", help="listen address (default CANDLECAST_API_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default CANDLECAST_API_PORT, 8090)")
    args = parser.parse_args(argv)
    try:
        settings = api_settings()
        db_settings("reader")  # fail here, naming the variable, rather than in the first request
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = args.host or settings.host, args.port or settings.port
    print(f"candlecast API and dashboard on http://{host}:{port}/ (API docs /docs), as the reader role; Ctrl-C stops",
          file=sys.stderr)
    uvicorn.run("serve.app:app_from_env", factory=True, host=host, port=port, workers=settings.workers,
                server_header=False, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
