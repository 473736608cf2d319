"""Forecasters: what a stored model is once loaded. All predict next-hour *log returns*.

A forecaster turns feature rows into a point forecast and an 80% interval (10th and 90th percentiles)
of the next hour's log return; ``predict`` and ``evaluate`` turn those into prices with
close × exp(return). Each forecaster serialises to plain text files (LightGBM's native model text,
or JSON for the baselines): never pickle, so a stored model is inspectable and safe to load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import lightgbm as lgb
    import numpy as np
    import pandas as pd

LIGHTGBM = "lightgbm"
PERSISTENCE = "naive_persistence"
DRIFT = "naive_drift"
BASELINE_KINDS = (PERSISTENCE, DRIFT)
KINDS = (LIGHTGBM, *BASELINE_KINDS)


@dataclass(frozen=True)
class Forecast:
    """Log-return forecasts, one per input row."""

    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


class Forecaster(Protocol):
    # Read-only members: the forecasters are frozen dataclasses, and nothing sets these after loading.
    @property
    def kind(self) -> str: ...

    @property
    def features(self) -> tuple[str, ...]: ...

    def predict(self, rows: pd.DataFrame) -> Forecast: ...

    def files(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class ConstantForecaster:
    """The naive baselines: the same return every hour (0 for persistence, the training mean for drift).

    The interval is the 10th-90th percentile of 1 h returns over the training window, so baselines are
    scored on coverage and pinball loss like every other model.
    """

    kind: str
    point_return: float
    lower_return: float
    upper_return: float
    features: tuple[str, ...] = ()

    def predict(self, rows: pd.DataFrame) -> Forecast:
        import numpy as np

        n = len(rows)
        return Forecast(
            point=np.full(n, self.point_return, dtype="float64"),
            lower=np.full(n, self.lower_return, dtype="float64"),
            upper=np.full(n, self.upper_return, dtype="float64"),
        )

    def files(self) -> dict[str, str]:
        body = {"point_return": self.point_return, "lower_return": self.lower_return,
                "upper_return": self.upper_return}
        return {"baseline.json": json.dumps(body, sort_keys=True, indent=2) + "\n"}

    @classmethod
    def from_files(cls, kind: str, files: dict[str, str]) -> ConstantForecaster:
        body = json.loads(files["baseline.json"])
        return cls(kind, float(body["point_return"]), float(body["lower_return"]), float(body["upper_return"]))


LIGHTGBM_FILES = ("model.txt", "quantile_10.txt", "quantile_90.txt")


@dataclass(frozen=True)
class LightGBMForecaster:
    """Three boosters on the same features: the point model and the 10th/90th quantile models."""

    point_model: lgb.Booster
    lower_model: lgb.Booster
    upper_model: lgb.Booster
    features: tuple[str, ...]
    num_threads: int = 1
    kind: str = LIGHTGBM

    def predict(self, rows: pd.DataFrame) -> Forecast:
        import numpy as np

        x = rows.loc[:, list(self.features)].to_numpy(dtype="float64")
        point = self.point_model.predict(x, num_threads=self.num_threads)
        q10 = self.lower_model.predict(x, num_threads=self.num_threads)
        q90 = self.upper_model.predict(x, num_threads=self.num_threads)
        # Independently fitted quantile models can cross; the interval is what lies between them.
        return Forecast(point=np.asarray(point, dtype="float64"), lower=np.minimum(q10, q90),
                        upper=np.maximum(q10, q90))

    def files(self) -> dict[str, str]:
        boosters = (self.point_model, self.lower_model, self.upper_model)
        return {name: b.model_to_string() for name, b in zip(LIGHTGBM_FILES, boosters, strict=True)}

    @classmethod
    def from_files(cls, files: dict[str, str], features: tuple[str, ...],
                   num_threads: int = 1) -> LightGBMForecaster:
        import lightgbm as lgb

        point, lower, upper = (lgb.Booster(model_str=files[name]) for name in LIGHTGBM_FILES)
        names = tuple(point.feature_name())
        if names != tuple(features):
            raise ValueError(f"model file's features {names[:3]}... differ from metadata {tuple(features)[:3]}...")
        return cls(point, lower, upper, tuple(features), num_threads)


def forecaster_from_files(kind: str, files: dict[str, str], features: tuple[str, ...]) -> Forecaster:
    if kind == LIGHTGBM:
        return LightGBMForecaster.from_files(files, features)
    if kind in BASELINE_KINDS:
        return ConstantForecaster.from_files(kind, files)
    raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(KINDS)})")
