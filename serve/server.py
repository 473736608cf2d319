"""A uvicorn server in a thread of the calling process, for the demo, the tests and the benchmark (``python -m
serve`` runs uvicorn in the foreground instead)."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


class ThreadedServer:
    """``with ThreadedServer(app, port) as server:`` serves ``app`` on ``server.url`` until the block ends."""

    def __init__(self, app: FastAPI, port: int, host: str = "127.0.0.1", start_timeout_s: float = 20) -> None:
        import uvicorn

        self.url = f"http://{host}:{port}"
        self.port = port
        self.start_timeout_s = start_timeout_s
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    lifespan="on", server_header=False))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{port}", daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.server.should_exit = True
                raise RuntimeError(f"the API did not start on {self.url} within {self.start_timeout_s:.0f} s "
                                   "(port taken?)")
            time.sleep(0.02)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
