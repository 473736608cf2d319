"""The dashboard's chart as server-rendered SVG: no script, no library, nothing fetched, so it draws offline.

Closes are one polyline (one point per real candle; an hour the API left out is not drawn), the forecasts
served for each hour another, the model's 80% band a shaded area behind them (one piece per run of model
forecasts: a fallback has no band), and the next hour's forecast a dot with its interval as a bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from candlecast.hours import HOUR

WIDTH, HEIGHT = 960, 360
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 16, 36


@dataclass(frozen=True)
class Point:
    hour: datetime
    value: float


@dataclass(frozen=True)
class Band:
    hour: datetime
    lower: float
    upper: float


@dataclass(frozen=True)
class ChartData:
    start: datetime  # first hour on the x axis
    end: datetime  # last hour on the x axis (the next hour's target)
    closes: list[Point]
    forecasts: list[Point]
    bands: list[Band]
    next_hour: Band | None  # the newest target hour's interval (None for a fallback)
    next_value: Point | None


def _runs(bands: list[Band]) -> list[list[Band]]:
    """Consecutive hours grouped: the band is not drawn across an hour without one."""
    runs: list[list[Band]] = []
    for band in bands:
        if runs and band.hour - runs[-1][-1].hour == HOUR:
            runs[-1].append(band)
        else:
            runs.append([band])
    return runs


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    magnitude = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1.0
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def render(data: ChartData, title: str) -> str:
    values = [p.value for p in data.closes + data.forecasts]
    values += [v for b in data.bands for v in (b.lower, b.upper)]
    if data.next_hour:
        values += [data.next_hour.lower, data.next_hour.upper]
    if not values:
        return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
                f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text></svg>')
    low, high = min(values), max(values)
    pad = (high - low) * 0.05 or max(abs(high) * 0.01, 1.0)
    low, high = low - pad, high + pad
    hours = max((data.end - data.start) / HOUR, 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(hour: datetime) -> float:
        return LEFT + (hour - data.start) / HOUR / hours * plot_w

    def y(value: float) -> float:
        return TOP + (high - value) / (high - low) * plot_h

    def points(series: list[Point]) -> str:
        return " ".join(f"{x(p.hour):.1f},{y(p.value):.1f}" for p in series)

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg">']
    step = _nice_step(high - low)
    tick = (low // step + 1) * step
    while tick < high:
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:,.0f}</text>')
        tick += step
    day = data.start.replace(hour=0) + 24 * HOUR
    while day <= data.end:
        parts.append(f'<line class="grid" x1="{x(day):.1f}" x2="{x(day):.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}"/>'
                     f'<text class="tick" x="{x(day):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                     f'{day:%b %d}</text>')
        day += 24 * HOUR
    for run in _runs(data.bands):
        outline = [f"{x(b.hour):.1f},{y(b.upper):.1f}" for b in run]
        outline += [f"{x(b.hour):.1f},{y(b.lower):.1f}" for b in reversed(run)]
        parts.append(f'<polygon class="band" points="{" ".join(outline)}"/>')
    parts.append(f'<polyline class="closes" data-count="{len(data.closes)}" points="{points(data.closes)}"/>')
    parts.append(f'<polyline class="forecasts" data-count="{len(data.forecasts)}" '
                 f'points="{points(data.forecasts)}"/>')
    if data.next_hour:
        nx = x(data.next_hour.hour)
        parts.append(f'<line class="next-band" x1="{nx:.1f}" x2="{nx:.1f}" y1="{y(data.next_hour.upper):.1f}" '
                     f'y2="{y(data.next_hour.lower):.1f}"/>')
    if data.next_value:
        parts.append(f'<circle class="next" cx="{x(data.next_value.hour):.1f}" cy="{y(data.next_value.value):.1f}" '
                     f'r="5"/>')
    parts.append("</svg>")
    return "".join(parts)
