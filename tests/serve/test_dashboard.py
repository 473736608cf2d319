"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against the live API.

Playwright's own browser download is not reachable here; Debian's build is (``make deps`` installs it).
A screenshot of each run is left under ``.local/test/`` for people to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from candlecast.hours import HOUR
from serve.server import ThreadedServer
from tests.conftest import TEST_LOCAL_DIR
from tests.serve.conftest import MISSING, NEWEST, PRODUCT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.integration

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = TEST_LOCAL_DIR / f"dashboard-{PRODUCT}.png"


def z(hour: Any) -> str:
    return f"{hour:%Y-%m-%dT%H:%M:%S}Z"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed (`make deps` installs it: apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Watched:
    """A page with every console message, page error and request recorded."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.problems: list[str] = []
        self.foreign: list[str] = []
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        page.on("request", lambda r: self.foreign.append(r.url)
                if not r.url.startswith((origin, "data:")) else None)


@pytest.fixture
def watched(browser: Browser, api: ThreadedServer) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1100, "height": 1300})
    try:
        yield Watched(context.new_page(), api.url)
    finally:
        context.close()


def test_the_dashboard_draws_the_week_and_shows_the_apis_numbers(watched: Watched, api: ThreadedServer) -> None:
    page = watched.page
    week_start, week_end = NEWEST + HOUR - timedelta(days=7), NEWEST + HOUR
    with httpx.Client(base_url=api.url, timeout=30) as client:
        [latest] = client.get("/v1/forecasts/latest").json()["forecasts"]
        features = client.get(f"/v1/products/{PRODUCT}/features", params={
            "start": z(week_start), "end": z(week_end), "fields": "close,is_missing_hour", "limit": 200}).json()
        served = client.get(f"/v1/products/{PRODUCT}/forecasts", params={
            "start": z(week_start), "end": z(week_end + HOUR), "limit": 200}).json()
        models = client.get("/v1/leaderboard", params={"product": PRODUCT}).json()["models"]
        health = client.get("/v1/health").json()["products"][0]

    answer = page.goto(api.url + "/")
    assert answer is not None and answer.status == 200
    page.wait_for_load_state("load")
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    closes = [r for r in features["items"] if not r["is_missing_hour"]]
    forecasts = [i for i in served["items"] if i["predicted_close"] is not None]
    assert len(closes) == 167 and len(forecasts) == 168  # the week minus the missing hour; every hour served
    drawn = page.evaluate("""() => ({
        closes: document.querySelector('svg.chart polyline.closes').points.numberOfItems,
        forecasts: document.querySelector('svg.chart polyline.forecasts').points.numberOfItems,
        bands: [...document.querySelectorAll('svg.chart polygon.band')].map(p => p.points.numberOfItems),
        next: document.querySelectorAll('svg.chart circle.next').length,
        width: document.querySelector('svg.chart').getBoundingClientRect().width,
    })""")
    assert drawn["closes"] == len(closes) and drawn["forecasts"] == len(forecasts)
    # the fallback (for the hour after the missing one) has no interval: the band is drawn in two pieces
    model_hours = [i["target_hour"] for i in served["items"] if not i["is_fallback"]]
    assert z(MISSING + HOUR) not in model_hours
    assert len(drawn["bands"]) == 2 and sum(drawn["bands"]) == 2 * len(model_hours)
    assert drawn["next"] == 1 and drawn["width"] > 500

    def value(selector: str) -> float:
        return float(page.locator(selector).get_attribute("data-value") or "nan")

    assert value("#next-close") == latest["predicted_close"]
    assert page.locator("#next-close").inner_text() == f"${latest['predicted_close']:,.2f}"
    assert (value("#next-lower"), value("#next-upper")) == (latest["lower_80"], latest["upper_80"])
    assert page.locator("#next-model").inner_text() == latest["model_version"]
    assert page.locator("#next-hour").inner_text() == "2024-01-10 00:00 UTC"
    rows = page.locator("#leaderboard tbody tr")
    assert rows.count() == len(models)
    assert [float(rows.nth(i).locator("td.mae span").get_attribute("data-value") or "nan")
            for i in range(rows.count())] == [m["mae_168h"] for m in models]
    assert page.locator("#health-status").inner_text() == health["status"]

    assert watched.problems == []
    assert watched.foreign == []  # offline: nothing fetched from anywhere but the app


def test_the_product_selector_lists_the_apis_products_and_switches_the_page(
        watched: Watched, api: ThreadedServer) -> None:
    page = watched.page
    with httpx.Client(base_url=api.url, timeout=30) as client:
        products = [p["product_id"] for p in client.get("/v1/products").json()["products"]]
    page.goto(api.url + "/")
    assert page.locator("#product option").all_inner_texts() == products
    with page.expect_navigation():
        page.select_option("#product", PRODUCT)  # the selector submits itself on change
    assert page.url.endswith(f"/?product={PRODUCT}")
    assert page.locator("h1").inner_text() == f"candlecast: {PRODUCT}"
    missing = page.goto(api.url + "/?product=DOGE-XYZ")
    assert missing is not None and missing.status == 404
    assert "DOGE-XYZ" in page.locator("#error").inner_text()
    # the 404 itself is logged by the browser as a failed resource; nothing else may be
    assert [p for p in watched.problems if "404" not in p] == []
    assert watched.foreign == []


def test_the_api_docs_render_every_endpoint_offline(watched: Watched, api: ThreadedServer) -> None:
    page = watched.page
    with httpx.Client(base_url=api.url, timeout=30) as client:
        spec = client.get("/openapi.json").json()
    operations = sum(len(methods) for methods in spec["paths"].values())
    page.goto(api.url + "/docs")
    page.wait_for_selector(".opblock", timeout=20_000)  # Swagger UI drew the operations from /openapi.json
    assert page.locator(".opblock").count() == operations >= 8
    assert watched.problems == []
    assert watched.foreign == []  # the vendored Swagger UI: no CDN
