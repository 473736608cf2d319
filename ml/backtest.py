"""Walk-forward backtest: retrain every week, forecast every hour of the following week, score it all.

Each week's model sees only rows whose target is realized before that week starts (the same
``time_split`` as production training, purge included), then forecasts each forecastable hour of the week
(the rule hourly inference uses: the hour's candle exists and the warm-up is reached). Results are reported
per week and overall, next to persistence and drift, and drawn as a PNG; hours with a missing hour inside
some feature window (gap-affected: those features NULL) are also scored apart from the clean ones.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from candlecast.hours import naive_utc
from candlecast.inputs import product_id
from ml.features import TARGET_CLOSE_COLUMN, gap_affected, usable_rows
from ml.metrics import Scores, score, to_prices
from ml.model import DRIFT, LIGHTGBM, PERSISTENCE
from ml.train import TrainConfig, train_candidates

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

KINDS = (LIGHTGBM, PERSISTENCE, DRIFT)
GAP_AFFECTED, CLEAN = "gap_affected", "clean"


class BacktestError(RuntimeError):
    pass


@dataclass(frozen=True)
class BacktestResult:
    product: str
    start: datetime
    end: datetime
    hourly: pd.DataFrame  # hour, week_start, close, actual, is_gap_affected, then predicted/lower/upper per kind
    weekly: pd.DataFrame  # week_start, kind, metrics...
    overall: dict[str, Scores]
    # the same scores on gap-affected hours and on clean ones (a kind maps to NaN scores when there are none)
    by_gap: dict[str, dict[str, Scores]]
    chart: Path | None = None

    def summary(self) -> str:
        lines = [f"walk-forward backtest {self.product} {self.start:%Y-%m-%d %H:%M}..{self.end:%Y-%m-%d %H:%M} UTC: "
                 f"{self.weekly['week_start'].nunique()} weekly retrains, {len(self.hourly)} hourly forecasts",
                 f"  {'model':<18} {'MAE':>9} {'RMSE':>9} {'MAPE%':>7} {'dir':>6} {'skill':>8} {'cov80':>6} "
                 f"{'pinball':>8}"]
        for kind in KINDS:
            s = self.overall[kind]
            direction = "-" if s.direction_accuracy != s.direction_accuracy else f"{s.direction_accuracy:.3f}"
            lines.append(f"  {kind:<18} {s.mae:>9.2f} {s.rmse:>9.2f} {s.mape:>7.3f} {direction:>6} {s.skill:>+8.4f} "
                         f"{s.coverage_80:>6.3f} {s.pinball_mean:>8.2f}")
        wins = int((self.weekly.query("kind == @LIGHTGBM")["skill"] > 0).sum())
        lines.append(f"  LightGBM beat persistence in {wins} of {self.weekly['week_start'].nunique()} weeks")
        for part, label in ((GAP_AFFECTED, "gap-affected hours (a missing hour in some window)"),
                            (CLEAN, "clean hours (every window whole)")):
            scores = self.by_gap[part]
            lgbm, persistence = scores[LIGHTGBM], scores[PERSISTENCE]
            if lgbm.n:
                lines.append(f"  {label}: {lgbm.n} hours, LightGBM MAE {lgbm.mae:.2f} vs persistence "
                             f"{persistence.mae:.2f}, skill {lgbm.skill:+.4f}")
            else:
                lines.append(f"  {label}: none")
        if self.chart:
            lines.append(f"  chart: {self.chart}")
        return "\n".join(lines)


def walk_forward(features: pd.DataFrame, product: str, start: datetime, end: datetime,
                 config: TrainConfig | None = None, retrain_hours: int = 168,
                 progress: Callable[[int, int], None] | None = None) -> BacktestResult:
    """Pure: ``features`` is the product's feature frame (all history up to ``end`` is enough)."""
    import pandas as pd

    config = config or TrainConfig()
    start, end = naive_utc(start), naive_utc(end)
    if end <= start:
        raise BacktestError(f"{product}: empty backtest range {start}..{end}")
    step = timedelta(hours=retrain_hours)
    weeks = []
    t = start
    while t < end:
        weeks.append(t)
        t += step
    usable = usable_rows(features)
    frames = []
    for i, week_start in enumerate(weeks):
        week_end = min(week_start + step, end)
        rows = usable.loc[(usable["hour"] >= pd.Timestamp(week_start)) & (usable["hour"] < pd.Timestamp(week_end))]
        if rows.empty:
            continue
        # Only what was known when the week started is handed to training.
        history = features.loc[features["hour"] < pd.Timestamp(week_start)]
        candidates = train_candidates(history, product, week_start, config, trained_at=week_start)
        out = pd.DataFrame({"hour": rows["hour"].to_numpy(), "week_start": pd.Timestamp(week_start),
                            "close": rows["close"].to_numpy(), "actual": rows[TARGET_CLOSE_COLUMN].to_numpy(),
                            "is_gap_affected": gap_affected(rows).to_numpy()})
        for cand in candidates:
            fc = cand.forecaster.predict(rows)
            pred, lo, hi = to_prices(rows["close"], fc.point, fc.lower, fc.upper)
            out[f"{cand.forecaster.kind}_predicted"] = pred
            out[f"{cand.forecaster.kind}_lower"] = lo
            out[f"{cand.forecaster.kind}_upper"] = hi
        frames.append(out)
        if progress:
            progress(i + 1, len(weeks))
    if not frames:
        raise BacktestError(f"{product}: no forecastable hours with a realized target in {start}..{end}")
    hourly = pd.concat(frames, ignore_index=True)
    weekly_rows = []
    for week_start, grp in hourly.groupby("week_start", sort=True):
        for kind in KINDS:
            s = _score(grp, kind)
            weekly_rows.append({"week_start": week_start, "kind": kind, **s.as_dict()})
    weekly = pd.DataFrame(weekly_rows)
    overall = {kind: _score(hourly, kind) for kind in KINDS}
    affected = hourly["is_gap_affected"].astype(bool)
    by_gap = {part: {kind: _score_part(hourly.loc[mask], kind) for kind in KINDS}
              for part, mask in ((GAP_AFFECTED, affected), (CLEAN, ~affected))}
    return BacktestResult(product, start, end, hourly, weekly, overall, by_gap)


def _score_part(frame: pd.DataFrame, kind: str) -> Scores:
    """Scores of a subset of the hours, which may be empty (a range without gaps): then n = 0 and NaN."""
    if frame.empty:
        nan = float("nan")
        return Scores(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    return _score(frame, kind)


def _score(frame: pd.DataFrame, kind: str) -> Scores:
    return score(frame["actual"], frame[f"{kind}_predicted"], frame[f"{kind}_lower"], frame[f"{kind}_upper"],
                 frame["close"])


def draw_chart(result: BacktestResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    h = result.hourly
    fig, axes = plt.subplots(3, 1, figsize=(13, 11), constrained_layout=True)
    ax = axes[0]
    ax.fill_between(h["hour"], h[f"{LIGHTGBM}_lower"], h[f"{LIGHTGBM}_upper"], color="tab:orange", alpha=0.25,
                    linewidth=0, label="LightGBM 80% interval")
    ax.plot(h["hour"], h["actual"], color="black", linewidth=0.6, label="actual close")
    ax.plot(h["hour"], h[f"{LIGHTGBM}_predicted"], color="tab:orange", linewidth=0.5, label="LightGBM forecast")
    lgbm, persistence = result.overall[LIGHTGBM], result.overall[PERSISTENCE]
    # an escaped dollar: a bare "$" starts matplotlib's mathtext
    ax.set_title(f"{result.product}: next-hour close, walk-forward with weekly retraining\n"
                 f"LightGBM MAE \\${lgbm.mae:,.2f} vs persistence \\${persistence.mae:,.2f} "
                 f"(skill {lgbm.skill:+.2%}), 80% interval coverage {lgbm.coverage_80:.1%}")
    ax.set_ylabel("USD")
    ax.legend(loc="upper left")

    last = h.loc[h["hour"] >= h["hour"].max() - np.timedelta64(7, "D")]
    ax = axes[1]
    ax.fill_between(last["hour"], last[f"{LIGHTGBM}_lower"], last[f"{LIGHTGBM}_upper"], color="tab:orange",
                    alpha=0.25, linewidth=0, label="LightGBM 80% interval")
    ax.plot(last["hour"], last["actual"], color="black", linewidth=1.0, marker=".", markersize=3, label="actual")
    ax.plot(last["hour"], last[f"{LIGHTGBM}_predicted"], color="tab:orange", linewidth=1.0, label="LightGBM")
    ax.plot(last["hour"], last["close"], color="tab:blue", linewidth=0.8, linestyle="--",
            label="persistence (previous close)")
    ax.set_title("last 7 days")
    ax.set_ylabel("USD")
    ax.legend(loc="upper left")

    ax = axes[2]
    persistence_err = np.abs(h["actual"] - h["close"]).cumsum()
    # The first day's ratio swings on a handful of hours; start the curve once it means something.
    settled = slice(min(48, len(h) - 1), None)
    values = []
    for kind, color in ((LIGHTGBM, "tab:orange"), (DRIFT, "tab:green")):
        err = np.abs(h["actual"] - h[f"{kind}_predicted"]).cumsum()
        curve = (1.0 - err / persistence_err).iloc[settled]
        values.append(curve)
        ax.plot(h["hour"].iloc[settled], curve, color=color, label=f"{kind}")
    low = min(0.0, *(float(v.min()) for v in values))
    high = max(0.0, *(float(v.max()) for v in values))
    pad = max(0.002, (high - low) * 0.15)
    ax.set_ylim(low - pad, high + pad)
    ax.axhline(0.0, color="tab:blue", linestyle="--", linewidth=1, label="persistence (skill 0)")
    ax.set_title("cumulative skill vs persistence: 1 − cumulative MAE / cumulative persistence MAE")
    ax.set_ylabel("skill")
    ax.legend(loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: BacktestResult, out_dir: Path) -> BacktestResult:
    """The chart, the hourly forecasts and weekly metrics (CSV) and the overall summary (JSON)."""
    stem = f"backtest-{product_id(result.product).lower()}-{result.start:%Y%m%dT%H}-{result.end:%Y%m%dT%H}"
    out_dir.mkdir(parents=True, exist_ok=True)
    chart = draw_chart(result, out_dir / f"{stem}.png")
    result.hourly.to_csv(out_dir / f"{stem}-hourly.csv", index=False)
    result.weekly.to_csv(out_dir / f"{stem}-weekly.csv", index=False)
    summary: dict[str, Any] = {"product": result.product, "start": result.start.isoformat(),
                               "end": result.end.isoformat(), "hours": len(result.hourly),
                               "overall": {k: v.as_dict() for k, v in result.overall.items()},
                               "by_gap": {part: {k: v.as_dict() for k, v in scores.items()}
                                          for part, scores in result.by_gap.items()}}
    (out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return BacktestResult(result.product, result.start, result.end, result.hourly, result.weekly, result.overall,
                          result.by_gap, chart)
