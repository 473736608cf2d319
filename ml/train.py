"""Training: time-ordered splits with a purge, LightGBM on next-hour log returns, baselines beside it.

The caller gives the training cutoff ``C``: a row is usable only when its target hour starts before
``C`` (``hour + 1h < C``), so nothing at or after the cutoff can reach the model. Usable rows are the
forecastable ones (``ml.features.usable_rows``): features blanked by a missing hour stay NaN, and LightGBM
learns which way such rows go at each split (its native missing-value handling). Of those rows the
most recent ``validation_hours`` are the validation split (early stopping and validation metrics); the
training split ends ``purge_hours`` before it, so no training target lies within the purge of a
validation row. Nothing is shuffled anywhere, seeds are fixed, LightGBM runs with ``deterministic`` and
a pinned thread count: the same rows give the same model text.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from candlecast.hours import HOUR, naive_utc
from candlecast.settings import Schemas
from ml.baselines import naive_drift, naive_persistence
from ml.features import FEATURE_COLUMNS, TARGET_CLOSE_COLUMN, TARGET_COLUMN, usable_rows
from ml.metrics import Scores, score_rows
from ml.model import Forecaster, LightGBMForecaster

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

    from ml.lineage import FeatureLineage
    from ml.store import ModelStore

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Not enough usable rows, or a bad window: the message names product and window."""


@dataclass(frozen=True)
class TrainConfig:
    validation_hours: int = 24 * 28
    purge_hours: int = 24
    train_hours: int | None = None  # None: all history before the purge
    min_train_rows: int = 500
    min_validation_rows: int = 24
    num_boost_round: int = 500
    early_stopping_rounds: int = 30
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 200
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    seed: int = 42
    num_threads: int = 1
    features: tuple[str, ...] = field(default=FEATURE_COLUMNS)

    def __post_init__(self) -> None:
        if self.purge_hours < 24:
            raise ValueError(f"purge_hours must be at least 24 (got {self.purge_hours})")
        if self.validation_hours < 1:
            raise ValueError("validation_hours must be positive")

    def lgb_params(self, objective: str, alpha: float | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "objective": objective,
            "metric": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "bagging_seed": self.seed,
            "feature_fraction_seed": self.seed,
            "data_random_seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }
        if alpha is not None:
            params["alpha"] = alpha
        return params

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = list(self.features)
        return d


@dataclass(frozen=True)
class Split:
    cutoff: datetime
    train: pd.DataFrame
    valid: pd.DataFrame

    def window(self) -> dict[str, Any]:
        def bounds(df: pd.DataFrame) -> tuple[datetime | None, datetime | None]:
            if df.empty:
                return None, None
            return df["hour"].iloc[0].to_pydatetime(), df["hour"].iloc[-1].to_pydatetime()

        t0, t1 = bounds(self.train)
        v0, v1 = bounds(self.valid)
        return {"train_first_hour": t0, "train_last_hour": t1, "valid_first_hour": v0,
                "valid_last_hour": v1, "cutoff": self.cutoff}


def time_split(features: pd.DataFrame, cutoff: datetime, config: TrainConfig) -> Split:
    """Validation = the last ``validation_hours`` usable rows before the cutoff; training ends a purge earlier."""
    import pandas as pd

    cutoff = naive_utc(cutoff)
    if cutoff.minute or cutoff.second or cutoff.microsecond:
        raise TrainingError(f"training cutoff {cutoff} is not on the hour")
    rows = usable_rows(features)
    known = rows.loc[rows["hour"] + pd.Timedelta(hours=1) < pd.Timestamp(cutoff)]
    valid_start = pd.Timestamp(cutoff - HOUR - timedelta(hours=config.validation_hours))
    valid = known.loc[known["hour"] >= valid_start]
    train = known.loc[known["hour"] + pd.Timedelta(hours=1 + config.purge_hours) <= valid_start]
    if config.train_hours is not None:
        train_start = valid_start - pd.Timedelta(hours=config.purge_hours + config.train_hours)
        train = train.loc[train["hour"] >= train_start]
    return Split(cutoff, train.reset_index(drop=True), valid.reset_index(drop=True))


def _check_split(split: Split, config: TrainConfig, product: str) -> None:
    if len(split.train) < config.min_train_rows or len(split.valid) < config.min_validation_rows:
        raise TrainingError(
            f"{product}: not enough forecastable rows with a realized target before cutoff "
            f"{split.cutoff:%Y-%m-%d %H:%M} UTC: {len(split.train)} training (need {config.min_train_rows}), "
            f"{len(split.valid)} validation (need {config.min_validation_rows})"
        )


def fit_lightgbm(split: Split, config: TrainConfig) -> tuple[LightGBMForecaster, dict[str, int]]:
    import lightgbm as lgb

    features = list(config.features)
    x_train = split.train.loc[:, features].to_numpy(dtype="float64")
    y_train = split.train[TARGET_COLUMN].to_numpy(dtype="float64")
    x_valid = split.valid.loc[:, features].to_numpy(dtype="float64")
    y_valid = split.valid[TARGET_COLUMN].to_numpy(dtype="float64")
    boosters: dict[str, lgb.Booster] = {}
    iterations: dict[str, int] = {}
    # l1 for the point model: the comparison metric is MAE, whose optimum is the conditional median.
    for name, objective, alpha in (("point", "l1", None), ("q10", "quantile", 0.1), ("q90", "quantile", 0.9)):
        params = config.lgb_params(objective, alpha)
        dtrain = lgb.Dataset(x_train, y_train, feature_name=features, params=params, free_raw_data=True)
        dvalid = lgb.Dataset(x_valid, y_valid, reference=dtrain, params=params, free_raw_data=True)
        booster = lgb.train(
            params, dtrain, num_boost_round=config.num_boost_round, valid_sets=[dvalid], valid_names=["valid"],
            callbacks=[lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True, verbose=False)],
        )
        # Keep only the trees up to the best validation iteration, so the stored text is exactly what predicts.
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
        iterations[name] = int(booster.current_iteration())
        boosters[name] = booster
    forecaster = LightGBMForecaster(boosters["point"], boosters["q10"], boosters["q90"], features=tuple(features),
                                    num_threads=config.num_threads)
    return forecaster, iterations


def validation_scores(forecaster: Forecaster, valid: pd.DataFrame) -> Scores:
    fc = forecaster.predict(valid)
    return score_rows(valid["close"], valid[TARGET_CLOSE_COLUMN], fc.point, fc.lower, fc.upper)


@dataclass(frozen=True)
class Candidate:
    forecaster: Forecaster
    metadata: dict[str, Any]


def train_candidates(features: pd.DataFrame, product: str, cutoff: datetime, config: TrainConfig,
                     trained_at: datetime | None = None, lineage: FeatureLineage | None = None) -> list[Candidate]:
    """LightGBM and both baselines fitted on the same split; pure apart from ``trained_at``.

    ``lineage`` (what computed ``features``: ``ml.lineage``) goes into the metadata of models that will be stored;
    the backtest, which stores nothing, leaves it out.
    """
    split = time_split(features, cutoff, config)
    _check_split(split, config, product)
    model, iterations = fit_lightgbm(split, config)
    common = {
        "product": product,
        "training_cutoff": split.cutoff,
        "trained_at": trained_at or datetime.now(UTC).replace(tzinfo=None),  # metadata only, never logic
        "training_window": split.window(),
        "row_count": {"train": len(split.train), "valid": len(split.valid)},
        "purge_hours": config.purge_hours,
    }
    if lineage is not None:
        # Baselines read no features, but they are defined on the same rows: they record it too.
        common["feature_hash"] = lineage.hash
        common["feature_lineage"] = lineage.as_metadata()
    out = []
    for forecaster, params in ((model, {**config.as_dict(), "best_iterations": iterations}),
                               (naive_persistence(split.train), {}),
                               (naive_drift(split.train), {})):
        scores = validation_scores(forecaster, split.valid)
        meta = {**common, "params": params, "validation_metrics": scores.as_dict()}
        out.append(Candidate(forecaster, meta))
    return out


@dataclass(frozen=True)
class TrainResult:
    product: str
    cutoff: datetime
    versions: dict[str, str]  # kind -> version
    validation: dict[str, dict[str, Any]]  # kind -> metrics

    def summary(self) -> str:
        lines = [f"trained {self.product} with cutoff {self.cutoff:%Y-%m-%d %H:%M} UTC:"]
        for kind, version in self.versions.items():
            m = self.validation[kind]
            lines.append(f"  {version}: validation MAE ${m['mae']:.2f} (persistence ${m['persistence_mae']:.2f}, "
                         f"skill {m['skill']:+.4f}, coverage_80 {m['coverage_80']:.3f})")
        return "\n".join(lines)


def train(engine: Engine, schemas: Schemas, store: ModelStore, product: str, cutoff: datetime,
          config: TrainConfig | None = None, *, lineage: FeatureLineage) -> TrainResult:
    """Read features before ``cutoff``, train LightGBM and the baselines, store and register all three.

    ``lineage`` is the feature lineage of the dbt project that built the feature table (``ml.lineage.read_lineage``
    of its manifest): each model records it, and is skipped once the features are computed otherwise.
    """
    from ml.features import read_features
    from ml.registry import ensure_ml_tables, register

    config = config or TrainConfig()
    cutoff = naive_utc(cutoff)
    features = read_features(engine, schemas, product, end=cutoff, columns=config.features)
    candidates = train_candidates(features, product, cutoff, config, lineage=lineage)
    versions: dict[str, str] = {}
    validation: dict[str, dict[str, Any]] = {}
    for cand in candidates:
        version = store.save(cand.forecaster, cand.metadata)
        versions[cand.forecaster.kind] = version
        validation[cand.forecaster.kind] = cand.metadata["validation_metrics"]
    ensure_ml_tables(engine, schemas)
    with engine.begin() as conn:
        for version in versions.values():
            register(conn, schemas, store.metadata(version))
    result = TrainResult(product, cutoff, versions, validation)
    log.info("%s", result.summary())
    return result
