"""The model's view of the dbt feature mart ``{base}_marts.fct_candle_features``.

The feature list is explicit: models record it, and the hash of the dbt SQL that computes it (``ml.lineage``); a
model whose columns are gone or whose hash no longer matches is skipped instead of silently fed other numbers.
Price *levels* (open/high/low/close/volume) are deliberately not features: they are not stationary,
and a model on levels looks good on shuffled splits and is badly wrong on time-ordered ones.

Which rows a model learns from, is scored on and forecasts from is one rule, ``is_forecastable`` from the
mart: the row's own candle exists and the product has its 168 h warm-up. A missing hour inside a window
makes only the features that read it NULL, and LightGBM treats those as missing values, so a gap no longer
stops the forecasts for the week its windows hold it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from candlecast.settings import Schemas

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Connection, Engine

FEATURE_TABLE = "fct_candle_features"


def _columns() -> tuple[str, ...]:
    names = [f"log_return_{h}h" for h in (1, 2, 3, 6, 12, 24, 168)]
    names += [f"log_return_1h_lag_{lag}" for lag in range(1, 25)]
    names += [f"return_mean_{w}h" for w in (6, 24, 72, 168)]
    names += [f"return_std_{w}h" for w in (6, 24, 72, 168)]
    names += ["realized_vol_24h", "realized_vol_168h", "hl_range", "close_position_in_range", "volume_zscore_24h",
              "volume_zscore_168h", "hour_of_day", "day_of_week"]
    return tuple(names)


# What each column means and how it is computed is the dbt model's (fct_candle_features.sql, described in
# _marts__models.yml); whether a model may still read them is ml.lineage's feature hash over that SQL.
FEATURE_COLUMNS: tuple[str, ...] = _columns()
TARGET_COLUMN = "target_log_return_1h"
TARGET_CLOSE_COLUMN = "target_close_1h"
FORECASTABLE_COLUMN = "is_forecastable"
# Columns read besides the features: keys, the price the forecast is applied to, targets and flags.
CONTEXT_COLUMNS: tuple[str, ...] = ("product_id", "hour", "close", TARGET_CLOSE_COLUMN, TARGET_COLUMN, "is_complete",
                                    FORECASTABLE_COLUMN)
FLAG_COLUMNS: tuple[str, ...] = ("is_complete", FORECASTABLE_COLUMN)


class FeatureError(RuntimeError):
    """The feature table is missing, has other columns than the models expect, or lacks a row."""


def table_columns(conn: Connection | Engine, schemas: Schemas) -> set[str]:
    from sqlalchemy import text
    from sqlalchemy.engine import Engine

    sql = text(
        "select column_name from information_schema.columns where table_schema = :s and table_name = :t"
    )
    params = {"s": schemas.marts, "t": FEATURE_TABLE}
    if isinstance(conn, Engine):
        with conn.connect() as c:
            rows = c.execute(sql, params).all()
    else:
        rows = conn.execute(sql, params).all()
    return {str(r[0]).lower() for r in rows}


def missing_columns(available: set[str], wanted: tuple[str, ...] | list[str]) -> list[str]:
    return [c for c in wanted if c.lower() not in available]


def validate_table(conn: Connection | Engine, schemas: Schemas,
                   wanted: tuple[str, ...] | list[str] = FEATURE_COLUMNS) -> None:
    available = table_columns(conn, schemas)
    if not available:
        raise FeatureError(
            f"{schemas.marts}.{FEATURE_TABLE} does not exist or is not readable: build it with `make dbt-build`"
        )
    missing = missing_columns(available, [*CONTEXT_COLUMNS, *wanted])
    if missing:
        raise FeatureError(f"{schemas.marts}.{FEATURE_TABLE} lacks columns the models need: {', '.join(missing)} "
                           "(built by an older dbt project? rebuild it: `make dbt-build DBT_FLAGS=--full-refresh`)")


def _select_packed(cols: list[str]) -> str:
    """One comma-joined text per row instead of one value per column.

    PyMySQL decodes the text protocol in pure Python, about 10 µs per value: 18k rows × 55 columns took
    8-17 s. Packed, the driver decodes 18k values and pandas' C parser does the rest, in well under a
    second. The numbers are the same text the server sends either way; NULL becomes an empty field.
    """
    parts = []
    for c in cols:
        if c == "hour":
            parts.append("cast(`hour` as char)")  # 'YYYY-MM-DD HH:MM:SS'
        else:
            parts.append(f"coalesce(`{c}`, '')")
    return f"concat_ws(',', {', '.join(parts)})"


def _frame(lines: list[str], cols: list[str]) -> pd.DataFrame:
    import io

    import pandas as pd

    dtypes = {c: "float64" for c in cols if c not in ("product_id", "hour")}
    df = pd.read_csv(io.StringIO("\n".join(lines)), header=None, names=cols, dtype={**dtypes, "product_id": "str"},
                     keep_default_na=False, na_values={c: [""] for c in dtypes}, engine="c")
    df["hour"] = pd.to_datetime(df["hour"], format="%Y-%m-%d %H:%M:%S")
    for flag in FLAG_COLUMNS:
        if flag in df:
            df[flag] = df[flag].fillna(0).astype(bool)
    return df


def newest_hour(engine: Engine, schemas: Schemas, product: str) -> datetime:
    """The newest hour of ``product`` in the feature table: where windows taken "from the data" end."""
    from sqlalchemy import text

    table = f"{schemas.marts}.{FEATURE_TABLE}"
    try:
        with engine.connect() as conn:
            value = conn.execute(text(f"select max(hour) from `{schemas.marts}`.`{FEATURE_TABLE}` "
                                      "where product_id = :p"), {"p": product}).scalar()
    except Exception as exc:
        raise FeatureError(f"cannot read {table}: {exc}") from exc
    if value is None:
        raise FeatureError(f"{table} has no rows for {product}")
    return value


def read_features(engine: Engine, schemas: Schemas, product: str, start: datetime | None = None,
                  end: datetime | None = None, columns: tuple[str, ...] | list[str] = FEATURE_COLUMNS,
                  validate: bool = True) -> pd.DataFrame:
    """Rows of one product with ``start <= hour < end`` (either bound optional), oldest first."""
    from sqlalchemy import text

    cols = list(dict.fromkeys([*CONTEXT_COLUMNS, *columns]))
    with engine.connect() as conn:
        if validate:
            validate_table(conn, schemas, columns)
        where = ["product_id = :p"]
        params: dict[str, object] = {"p": product}
        if start is not None:
            where.append("hour >= :start")
            params["start"] = start
        if end is not None:
            where.append("hour < :end")
            params["end"] = end
        sql = (
            f"select {_select_packed(cols)} from `{schemas.marts}`.`{FEATURE_TABLE}` "
            f"where {' and '.join(where)} order by hour"
        )
        lines = [str(r[0]) for r in conn.execute(text(sql), params).all()]
    if not lines:
        import pandas as pd

        return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols}).astype(
            {"product_id": "str", "hour": "datetime64[us]", **{flag: "bool" for flag in FLAG_COLUMNS}})
    return _frame(lines, cols)


def usable_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows a model may learn from or be scored on: forecastable (own candle, warm-up reached), target realized.

    The same rule as hourly inference, so training, evaluation and the backtest see the rows production
    forecasts from, gap-affected ones (some features NULL) included.
    """
    mask = df[FORECASTABLE_COLUMN].astype(bool) & df[TARGET_COLUMN].notna() & df[TARGET_CLOSE_COLUMN].notna()
    return df.loc[mask].reset_index(drop=True)


def gap_affected(df: pd.DataFrame) -> pd.Series:
    """Forecastable rows with a missing hour inside some window (some features NULL): reported apart."""
    return df[FORECASTABLE_COLUMN].astype(bool) & ~df["is_complete"].astype(bool)
