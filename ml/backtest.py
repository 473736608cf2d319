"""Walk-forward backtest: retrain every week, forecast every hour of the following week, score it all.

Each week's model sees only rows whose target is realized before that week starts (the same
``time_split`` as production training, purge included), then forecasts each forecastable hour of the week
(the rule hourly inference uses: the hour's candle exists and the warm-up is reached). Every model's 80%
interval is recalibrated hour by hour on its own realized residuals before that hour (``ml.calibrate``, the rule
hourly inference serves), and scored beside the raw one (``*_raw``) and a rolling-volatility interval
(``rolling_vol``: persistence with close × exp(±1.2816 σ), σ the sample std of the last 24 one-hour log returns).
Results are reported per week and overall, next to persistence and drift, and drawn as a PNG; hours with a
missing hour inside some feature window (gap-affected: those features NULL) are also scored apart from the clean
ones.
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
from ml.calibrate import Recalibration, recalibrate
from ml.features import FORECASTABLE_COLUMN, TARGET_CLOSE_COLUMN, TARGET_COLUMN, gap_affected
from ml.metrics import Scores, score, to_prices
from ml.model import DRIFT, LIGHTGBM, PERSISTENCE
from ml.train import TrainConfig, train_candidates

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

KINDS = (LIGHTGBM, PERSISTENCE, DRIFT)
RAW = "_raw"  # suffix: the model's own interval, before recalibration
ROLLING_VOL = "rolling_vol"
# the rows of the tables: each model as served (recalibrated interval), the raw intervals, the volatility baseline
ROWS = (LIGHTGBM, LIGHTGBM + RAW, PERSISTENCE, PERSISTENCE + RAW, DRIFT, ROLLING_VOL)
Z_80 = 1.2815515655446004  # the standard normal's 0.9 quantile
COVERAGE_BAND = (0.75, 0.85)  # a week "holds" when its coverage lies in it
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

    def weeks_holding(self, kind: str) -> tuple[int, int]:
        """(weeks whose 80% interval coverage lies within ``COVERAGE_BAND``, weeks) for one row of the table."""
        cov = self.weekly.loc[self.weekly["kind"] == kind, "coverage_80"]
        low, high = COVERAGE_BAND
        return int(((cov >= low) & (cov <= high)).sum()), int(cov.size)

    def summary(self) -> str:
        weeks = self.weekly["week_start"].nunique()
        lines = [f"walk-forward backtest {self.product} {self.start:%Y-%m-%d %H:%M}..{self.end:%Y-%m-%d %H:%M} UTC: "
                 f"{weeks} weekly retrains, {len(self.hourly)} hourly forecasts",
                 f"  {'model':<22} {'MAE':>9} {'RMSE':>9} {'MAPE%':>7} {'dir':>6} {'skill':>8} {'cov80':>6} "
                 f"{'width':>8} {'pinball':>8} {'weeks 75-85%':>13} {'weekly cov80':>13}"]
        for kind in ROWS:
            s = self.overall[kind]
            direction = "-" if s.direction_accuracy != s.direction_accuracy else f"{s.direction_accuracy:.3f}"
            held, total = self.weeks_holding(kind)
            cov = self.weekly.loc[self.weekly["kind"] == kind, "coverage_80"]
            lines.append(f"  {kind:<22} {s.mae:>9.2f} {s.rmse:>9.2f} {s.mape:>7.3f} {direction:>6} {s.skill:>+8.4f} "
                         f"{s.coverage_80:>6.3f} {s.width_80:>8.2f} {s.pinball_mean:>8.2f} "
                         f"{held:>4}/{total:<3} {held / total:>4.0%} {cov.min():>6.3f}-{cov.max():.3f}")
        wins = int((self.weekly.query("kind == @LIGHTGBM")["skill"] > 0).sum())
        lines.append(f"  LightGBM beat persistence in {wins} of {weeks} weeks; intervals: as served (recalibrated on "
                     "each model's realized residuals), *_raw as the models give them")
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


def rolling_vol_interval(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The rolling-volatility baseline's 80% interval in log returns: ±1.2816 σ, σ the sample std of the 24
    one-hour log returns ending at each row (the row's own and 23 lags; those a gap blanked left out). Where
    fewer than two are known, the previous row's σ."""
    import numpy as np
    import pandas as pd

    cols = ["log_return_1h", *(f"log_return_1h_lag_{k}" for k in range(1, 24))]
    returns = rows.loc[:, cols].to_numpy(dtype="float64")
    known = np.count_nonzero(~np.isnan(returns), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.where(known >= 2, np.nanstd(np.where(known[:, None] >= 2, returns, 0.0), axis=1, ddof=1), np.nan)
    sigma = pd.Series(sigma).ffill().to_numpy()
    return -Z_80 * sigma, Z_80 * sigma


def walk_forward(features: pd.DataFrame, product: str, start: datetime, end: datetime,
                 config: TrainConfig | None = None, retrain_hours: int = 168,
                 progress: Callable[[int, int], None] | None = None,
                 recalibration: Recalibration | None = None) -> BacktestResult:
    """Pure: ``features`` is the product's feature frame (all history up to ``end`` is enough)."""
    import numpy as np
    import pandas as pd

    config = config or TrainConfig()
    recalibration = recalibration or Recalibration()
    start, end = naive_utc(start), naive_utc(end)
    if end <= start:
        raise BacktestError(f"{product}: empty backtest range {start}..{end}")
    step = timedelta(hours=retrain_hours)
    weeks = []
    t = start
    while t < end:
        weeks.append(t)
        t += step
    lookback = pd.Timedelta(hours=recalibration.lookback_hours)
    forecastable = features.loc[features[FORECASTABLE_COLUMN].astype(bool)]
    frames = []
    for i, week_start in enumerate(weeks):
        week_end = min(week_start + step, end)
        # The week's forecastable hours and the ones before them whose residuals recalibrate the intervals.
        span = forecastable.loc[(forecastable["hour"] >= pd.Timestamp(week_start) - lookback)
                                & (forecastable["hour"] < pd.Timestamp(week_end))].reset_index(drop=True)
        in_week = ((span["hour"] >= pd.Timestamp(week_start)) & span[TARGET_COLUMN].notna()
                   & span[TARGET_CLOSE_COLUMN].notna()).to_numpy()
        if not in_week.any():
            continue
        rows = span.loc[in_week]
        # Only what was known when the week started is handed to training.
        history = features.loc[features["hour"] < pd.Timestamp(week_start)]
        candidates = train_candidates(history, product, week_start, config, trained_at=week_start)
        out = pd.DataFrame({"hour": rows["hour"].to_numpy(), "week_start": pd.Timestamp(week_start),
                            "close": rows["close"].to_numpy(), "actual": rows[TARGET_CLOSE_COLUMN].to_numpy(),
                            "is_gap_affected": gap_affected(rows).to_numpy()})
        for cand in candidates:
            kind = cand.forecaster.kind
            fc = cand.forecaster.predict(span)
            lower, upper = recalibrate(span["hour"], fc.lower, fc.upper, span[TARGET_COLUMN], recalibration,
                                       where=in_week)
            pred, lo_raw, hi_raw = to_prices(rows["close"], fc.point[in_week], fc.lower[in_week], fc.upper[in_week])
            _, lo, hi = to_prices(rows["close"], fc.point[in_week], lower[in_week], upper[in_week])
            out[f"{kind}_predicted"], out[f"{kind}_lower"], out[f"{kind}_upper"] = pred, lo, hi
            if kind + RAW in ROWS:
                raw = kind + RAW
                out[f"{raw}_predicted"], out[f"{raw}_lower"], out[f"{raw}_upper"] = pred, lo_raw, hi_raw
        vol_lo, vol_hi = rolling_vol_interval(rows)
        zero = np.zeros(len(rows))
        out[f"{ROLLING_VOL}_predicted"], out[f"{ROLLING_VOL}_lower"], out[f"{ROLLING_VOL}_upper"] = to_prices(
            rows["close"], zero, vol_lo, vol_hi)
        frames.append(out)
        if progress:
            progress(i + 1, len(weeks))
    if not frames:
        raise BacktestError(f"{product}: no forecastable hours with a realized target in {start}..{end}")
    hourly = pd.concat(frames, ignore_index=True)
    weekly_rows = []
    for week_start, grp in hourly.groupby("week_start", sort=True):
        for kind in ROWS:
            s = _score(grp, kind)
            weekly_rows.append({"week_start": week_start, "kind": kind, **s.as_dict()})
    weekly = pd.DataFrame(weekly_rows)
    overall = {kind: _score(hourly, kind) for kind in ROWS}
    affected = hourly["is_gap_affected"].astype(bool)
    by_gap = {part: {kind: _score_part(hourly.loc[mask], kind) for kind in ROWS}
              for part, mask in ((GAP_AFFECTED, affected), (CLEAN, ~affected))}
    return BacktestResult(product, start, end, hourly, weekly, overall, by_gap)


def _score_part(frame: pd.DataFrame, kind: str) -> Scores:
    """Scores of a subset of the hours, which may be empty (a range without gaps): then n = 0 and NaN."""
    if frame.empty:
        nan = float("nan")
        return Scores(0, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan)
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
