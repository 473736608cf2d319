"""The dashboard page at ``/``: per product the last 7 days of closes with the forecasts served and their 80%
band, the next hour's forecast in large type, the leaderboard and the health checks, and a product selector.

Server-rendered HTML and SVG (``serve.chart``): nothing is loaded from anywhere else, so it works offline, and
the page's Content-Security-Policy forbids anything else. Numbers come from the same queries as the API
(``serve.marts``), each with its raw value in a ``data-value`` attribute beside the formatted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from html import escape
from typing import TYPE_CHECKING, Any

from candlecast.hours import HOUR
from candlecast.settings import ApiSettings, Schemas
from serve import chart, health, marts
from serve.errors import is_missing_table

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

WINDOW = timedelta(days=7)
# Inline styles and the selector's one-line script only; no other origin, no plug-ins, no framing.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                           "img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


@dataclass(frozen=True)
class View:
    products: list[str]
    product: str | None
    latest: marts.Row | None
    chart: chart.ChartData | None
    leaderboard: list[marts.Row]
    health: dict[str, Any] | None  # this product's entry of the health report
    last_modified: datetime | None


def _f(value: Any) -> float:
    return float(value) if isinstance(value, Decimal | int | float) else float("nan")


def read_view(conn: Connection, schemas: Schemas, wanted: str | None, now: datetime,
              settings: ApiSettings) -> View:
    """Everything the page shows for ``wanted`` (default: the first product); ``product`` None when unknown."""
    products = [str(r["product_id"]) for r in marts.products(conn, schemas)]
    product = wanted if wanted in products else (None if wanted else (products[0] if products else None))
    if product is None:
        return View(products, None, None, None, [], None, None)
    newest = marts.newest_hour(conn, schemas, product)
    latest_rows = marts.latest_forecasts(conn, schemas, product)
    latest = latest_rows[0] if latest_rows else None
    data = None
    if newest is not None:
        start, end = newest + HOUR - WINDOW, newest + HOUR
        closes = [chart.Point(r["hour"], _f(r["close"])) for r in marts.closes(conn, schemas, product, start, end)
                  if not r["is_missing_hour"]]
        served = marts.forecasts(conn, schemas, product, start, end + HOUR, int(WINDOW / HOUR) + 1)
        last = max(end, latest["target_hour"]) if latest else end
        data = chart.ChartData(
            start=start, end=last, closes=closes,
            forecasts=[chart.Point(r["target_hour"], _f(r["predicted_close"])) for r in served
                       if r["predicted_close"] is not None],
            bands=[chart.Band(r["target_hour"], _f(r["lower_80"]), _f(r["upper_80"])) for r in served
                   if r["lower_80"] is not None and r["upper_80"] is not None],
            next_hour=(chart.Band(latest["target_hour"], _f(latest["lower_80"]), _f(latest["upper_80"]))
                       if latest and latest["lower_80"] is not None else None),
            next_value=(chart.Point(latest["target_hour"], _f(latest["predicted_close"]))
                        if latest and latest["predicted_close"] is not None else None),
        )
    entry = _health_entry(conn, schemas, product, now, settings)
    modified = [t for t in (newest + HOUR if newest else None, latest["updated_at"] if latest else None) if t]
    return View(products, product, latest, data, marts.leaderboard(conn, schemas, product), entry,
                max(modified) if modified else None)


def _health_entry(conn: Connection, schemas: Schemas, product: str, now: datetime,
                  settings: ApiSettings) -> dict[str, Any] | None:
    """This product's health report; None while the health mart is not built (the page shows the rest)."""
    from sqlalchemy.exc import ProgrammingError

    try:
        rows = marts.product_health(conn, schemas)
    except ProgrammingError as exc:
        if not is_missing_table(exc):
            raise
        return None
    report = health.report([r for r in rows if r["product_id"] == product], now, settings)
    entries = report["products"]
    return entries[0] if isinstance(entries, list) and entries else None


def _money(value: Any, id_: str | None = None) -> str:
    if value is None:
        return '<span class="na">n/a</span>'
    attr = f' id="{id_}"' if id_ else ""
    return f'<span{attr} data-value="{_f(value)!r}">${_f(value):,.2f}</span>'


def _num(value: Any, fmt: str) -> str:
    if value is None:
        return '<span class="na">n/a</span>'
    return f'<span data-value="{_f(value)!r}">{format(_f(value), fmt)}</span>'


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value else "n/a"


def _selector(view: View) -> str:
    options = "".join(
        f'<option value="{escape(p)}"{" selected" if p == view.product else ""}>{escape(p)}</option>'
        for p in view.products
    )
    return ('<form class="selector" method="get" action="/"><label>Product '
            f'<select id="product" name="product" onchange="this.form.submit()">{options}</select></label>'
            '<noscript><button type="submit">Show</button></noscript></form>')


def _next_hour(latest: marts.Row | None) -> str:
    if latest is None:
        return '<section class="next"><p>No forecast has been served yet.</p></section>'
    fallback = latest["outcome"] != "model"
    label = (f'<p class="fallback">Fallback ({escape(str(latest["reason_code"] or latest["outcome"]))}): '
             f'{escape(str(latest["reason"] or ""))}</p>') if fallback else ""
    band = ""
    if latest["lower_80"] is not None:
        band = (f'<p class="band-text">80% interval {_money(latest["lower_80"], "next-lower")} to '
                f'{_money(latest["upper_80"], "next-upper")}</p>')
    model = (f'<p class="model">model <code id="next-model">{escape(str(latest["model_version"]))}</code></p>'
             if latest["model_version"] else "")
    return ('<section class="next">'
            f'<h2>Next hour: <span id="next-hour">{_when(latest["target_hour"])}</span></h2>'
            f'<p class="big">{_money(latest["predicted_close"], "next-close")}</p>'
            f'{band}{model}{label}'
            f'<p class="from">from the candle of {_when(latest["feature_hour"])}</p></section>')


def _leaderboard(rows: list[marts.Row]) -> str:
    if not rows:
        return '<section><h2>Leaderboard</h2><p>No realized forecast yet.</p></section>'
    body = "".join(
        f'<tr class="{escape(str(r["status"] or ""))}"><td>{"-" if r["rank_168h"] is None else r["rank_168h"]}</td>'
        f'<td><code>{escape(str(r["model_version"]))}</code></td><td>{escape(str(r["model_kind"] or ""))}</td>'
        f'<td>{escape(str(r["status"] or ""))}</td><td>{r["n_168h"]}</td>'
        f'<td class="mae">{_num(r["mae_168h"], ",.2f")}</td><td>{_num(r["persistence_mae_168h"], ",.2f")}</td>'
        f'<td class="skill">{_num(r["skill_168h"], "+.4f")}</td><td>{_num(r["coverage_80_168h"], ".3f")}</td></tr>'
        for r in rows
    )
    return ('<section><h2>Leaderboard (trailing 168 h)</h2><table id="leaderboard"><thead><tr><th>rank</th>'
            '<th>model</th><th>kind</th><th>status</th><th>hours</th><th>MAE</th><th>persistence MAE</th>'
            f'<th>skill</th><th>80% coverage</th></tr></thead><tbody>{body}</tbody></table></section>')


def _health(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return ('<section><h2>Health: <span id="health-status" class="warn">unknown</span></h2><p>No row in '
                "<code>product_health</code> for this product yet: the cycle's health step builds it (or "
                "<code>dbt run --select tag:health</code>).</p></section>")
    checks = "".join(
        f'<li class="{escape(c["status"])}"><b>{escape(c["name"])}</b> {escape(c["status"])}: '
        f'{escape(c["detail"])}</li>' for c in entry["checks"]
    )
    return (f'<section><h2>Health: <span id="health-status" class="{escape(entry["status"])}">'
            f'{escape(entry["status"])}</span></h2><ul class="checks">{checks}</ul></section>')


STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1000px;padding:1rem;color:#222}
header{display:flex;justify-content:space-between;align-items:center;gap:1rem}
h1{font-size:1.4rem;margin:.2rem 0} h2{font-size:1.1rem;margin:.8rem 0 .3rem}
.big{font-size:3rem;font-weight:700;margin:.2rem 0}.fallback{color:#a15c00}.na{color:#888}
.chart{width:100%;height:auto;border:1px solid #ddd;background:#fff}
.chart .grid{stroke:#eee}.chart .tick{font-size:11px;fill:#666}
.chart .closes{fill:none;stroke:#1f2937;stroke-width:1.5}.chart .forecasts{fill:none;stroke:#2563eb;stroke-width:1.2}
.chart .band{fill:#93c5fd;fill-opacity:.35;stroke:none}.chart .next{fill:#dc2626}
.chart .next-band{stroke:#dc2626;stroke-width:3}
table{border-collapse:collapse;font-size:.85rem}td,th{padding:.2rem .5rem;border-bottom:1px solid #eee;text-align:right}
td:nth-child(2),td:nth-child(3),td:nth-child(4){text-align:left}tr.production{font-weight:600}
.ok{color:#15803d}.warn{color:#a15c00}.error{color:#b91c1c}.legend span{margin-right:1rem}
"""


def _page(title: str, body: str) -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>")


def error_page(status: int, message: str) -> str:
    return _page(f"candlecast: {status}", f'<h1>candlecast</h1><p class="error" id="error">{status}: '
                                          f"{escape(message)}</p>")


def render(view: View) -> str:
    title = f"candlecast: {view.product}" if view.product else "candlecast"
    if view.product is None:
        main = "<p>No product in the feature mart yet: run the pipeline (<code>make demo</code>).</p>"
    else:
        svg = chart.render(view.chart, f"{view.product} closes and forecasts") if view.chart else ""
        main = (f"{_next_hour(view.latest)}<section><h2>Last 7 days</h2>"
                '<p class="legend"><span>— close</span><span style="color:#2563eb">— forecast served</span>'
                '<span style="color:#60a5fa">▮ 80% interval</span><span style="color:#dc2626">● next hour</span></p>'
                f"{svg}</section>{_leaderboard(view.leaderboard)}{_health(view.health)}")
    return _page(title, f"<header><h1>{escape(title)}</h1>{_selector(view)}</header>{main}"
                        "<footer><p>JSON: <a href=\"/v1/forecasts/latest\">/v1/forecasts/latest</a> · "
                        "<a href=\"/docs\">API docs</a></p></footer>")
