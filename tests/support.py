"""Test helpers shared by areas: the bundled sample, a direct raw-table load, and table snapshots to compare.

`load_raw_candles` writes rows straight into the raw table, for the dbt and ML tests that need raw data
but are not testing the extractor (the extractor's own tests go through HTTP).
"""

from __future__ import annotations

import csv
import gzip
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from candlecast.settings import Schemas

BUNDLED_CSV = Path(__file__).resolve().parent.parent / "data" / "coinbase_btc-usd_1h.csv.gz"


@dataclass(frozen=True)
class Candle:
    time: int
    low: Decimal
    high: Decimal
    open: Decimal
    close: Decimal
    volume: Decimal

    @property
    def bucket_start(self) -> datetime:
        return datetime.fromtimestamp(self.time, UTC).replace(tzinfo=None)


def bundled_candles() -> list[Candle]:
    with gzip.open(BUNDLED_CSV, "rt", newline="") as fh:
        return [
            Candle(int(r["time"]), Decimal(r["low"]), Decimal(r["high"]), Decimal(r["open"]),
                   Decimal(r["close"]), Decimal(r["volume"]))
            for r in csv.DictReader(fh)
        ]


def load_raw_candles(engine, schemas: Schemas, candles: list[Candle], product_id: str = "BTC-USD") -> None:
    from sqlalchemy import text

    from extract.schema import ensure_raw_tables

    ensure_raw_tables(engine, schemas)
    rows = [
        {"p": product_id, "t": c.bucket_start, "o": c.open, "h": c.high, "l": c.low, "c": c.close, "v": c.volume}
        for c in candles
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                f"insert into `{schemas.raw}`.candles "
                "(product_id, bucket_start, open, high, low, close, volume, ingested_at) "
                "values (:p, :t, :o, :h, :l, :c, :v, utc_timestamp(6)) "
                "on duplicate key update open=values(open), high=values(high), low=values(low), "
                "close=values(close), volume=values(volume), ingested_at=values(ingested_at)"
            ),
            rows,
        )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, for a private server (fixed ports collide between checkouts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def backfill_history(env: Mapping[str, str], start: datetime, end: datetime, product: str = "BTC-USD") -> None:
    """Fetch ``[start, end)`` from the API ``env`` names into ``env``'s base through the extractor (the history
    a test's runs start from: set-up, not under test)."""
    from candlecast.db import make_engine
    from candlecast.settings import ExtractSettings, db_settings
    from extract.pipeline import backfill

    settings = db_settings("loader", env)
    engine = make_engine(settings)
    try:
        result = backfill(product, start, end, engine=engine, schemas=settings.schemas,
                          settings=ExtractSettings.from_env(env), now=end)
    finally:
        engine.dispose()
    assert result.status == "success", result.summary()


# Columns that record *when* something was written (or a run's id), not *what*: they differ between
# any two runs by design and are left out of comparisons.
VOLATILE_COLUMNS = {"metadata", "run_id"}


def snapshot(admin, base: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table and view of a base (all its databases), rows sorted, volatile columns left out."""
    from sqlalchemy import text

    schemas = Schemas(base)
    out: dict[str, list[tuple[Any, ...]]] = {}
    with admin.connect() as conn:
        for database in schemas.all():
            tables = conn.execute(
                text("select table_name from information_schema.tables where table_schema = :s "
                     "and table_name not like '%%__dbt_tmp%%' order by table_name"), {"s": database},
            ).scalars().all()
            for table in tables:
                columns = conn.execute(
                    text("select column_name from information_schema.columns where table_schema = :s "
                         "and table_name = :t order by ordinal_position"), {"s": database, "t": table},
                ).scalars().all()
                keep = [c for c in columns if not c.lower().endswith("_at") and c.lower() not in VOLATILE_COLUMNS]
                if database == schemas.raw and table == "extract_runs":
                    continue  # one row per run: two runs of the same hours are different runs
                if database == schemas.ml and table == "model_store_files":
                    # each version's metadata.json says when it was trained; the model files' identity is the
                    # version's checksum, compared in model_store_versions
                    continue
                cols = ", ".join(f"`{c}`" for c in keep)
                rows = conn.execute(text(f"select {cols} from `{database}`.`{table}`")).all()
                key = f"{database.removeprefix(base)}.{table}"
                out[key] = sorted((tuple(r) for r in rows), key=repr)
    return out


def differences(a: dict[str, list[tuple[Any, ...]]], b: dict[str, list[tuple[Any, ...]]],
                names: tuple[str, str] = ("DAG run", "direct run")) -> list[str]:
    """What differs between two snapshots, table by table (a few rows of each side); [] when equal."""
    problems = []
    for table in sorted(set(a) | set(b)):
        if table not in a or table not in b:
            problems.append(f"{table}: only in {names[0] if table in a else names[1]}")
        elif a[table] != b[table]:
            only_a = [r for r in a[table] if r not in b[table]][:3]
            only_b = [r for r in b[table] if r not in a[table]][:3]
            problems.append(f"{table}: {len(a[table])} vs {len(b[table])} rows; "
                            f"{names[0]} only {only_a}; {names[1]} only {only_b}")
    return problems


class ProcessWatch:
    """Samples a process and all its descendants (a running Airflow's scheduler, task supervisors and runners,
    which run in sessions of their own, dbt under Cosmos; the cycle command's step processes) every 0.1 s while
    a run goes on: which role passwords each one's environment and command line hold, read from /proc."""

    def __init__(self, root_pid: int, passwords: Mapping[str, str]) -> None:
        import threading

        self.root_pid = root_pid
        self.passwords = passwords
        # (pid, parent pid, command line, roles whose password its environment holds, roles in its argv)
        self.seen: set[tuple[int, int, str, frozenset[str], frozenset[str]]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-watch", daemon=True)
        self._thread.start()

    def _roles_in(self, data: bytes) -> frozenset[str]:
        return frozenset(role for role, pw in self.passwords.items() if pw.encode() in data)

    def _run(self) -> None:
        from pathlib import Path

        import psutil

        root = psutil.Process(self.root_pid)
        while not self._stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in tree:
                try:
                    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
                    environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
                    parent = proc.ppid()
                except (OSError, psutil.Error):
                    continue
                # A process that is exiting (a zombie, or one whose memory is being released between the two
                # reads) shows an empty argv or an empty environment: nothing to judge. Every process of ours has
                # an environment.
                if not cmdline or not environ:
                    continue
                shown = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
                self.seen.add((proc.pid, parent, shown, self._roles_in(environ), self._roles_in(cmdline)))
            time.sleep(0.1)

    def stop(self) -> set[tuple[int, int, str, frozenset[str], frozenset[str]]]:
        self._stop.set()
        self._thread.join()
        return self.seen


class MailSink:
    """A minimal real SMTP server on 127.0.0.1 (HELO/EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, no TLS or auth)
    that keeps every message handed to it: what an alert's ``SmtpNotifier`` reaches in the tests."""

    def __init__(self, port: int = 0) -> None:
        import email
        import socketserver
        import threading
        from email.message import Message

        self.messages: list[Message] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(f"{line}\r\n".encode())

            def handle(self) -> None:
                self.reply("220 candlecast test mail sink")
                while raw := self.rfile.readline():
                    verb = raw.decode("utf-8", "replace").strip()[:4].upper()
                    if verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        lines = []
                        while (line := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                            lines.append(line[1:] if line.startswith(b"..") else line)
                        sink.messages.append(email.message_from_bytes(b"".join(lines)))
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    elif verb in ("HELO", "EHLO", "MAIL", "RCPT", "RSET", "NOOP"):
                        self.reply("250 ok")
                    else:
                        self.reply("502 not implemented")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="mail-sink", daemon=True)

    def __enter__(self) -> MailSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
