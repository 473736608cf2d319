"""The ML tables in ``{base}_ml`` (owned by the ``ml`` role): registry, promotions, evaluations, predictions.

``model_registry`` mirrors the store (one row per version) with a status: candidate, production or
archived. A persistent generated column with a unique key makes "at most one production model per
product" a database rule, not a convention. ``model_promotions`` records every switch with the
metrics it was made on; ``model_evaluations`` every score and every skip with its reason;
``predictions`` the hourly forecasts of every registered model that is not archived (key product_id +
target_hour + model_version), each with its ``role``: ``production`` for the one that was served (at most one
per product and hour, and it is the model ``forecast_outcomes`` names), ``shadow`` for the others, which
forecast the same hours so that models are compared on the same hours; ``forecast_skips`` the shadow models
that could not forecast an hour, with the reason; and ``forecast_outcomes`` what the hourly step served for
each target hour: the production model's forecast, a labelled persistence fallback (with its reason) when the
just-closed candle is missing, or "no forecast". Fallbacks live only in ``forecast_outcomes``, never in
``predictions``, so model accuracy never mixes them in.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from candlecast.settings import Schemas
from candlecast.sql import quote_ident

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

CANDIDATE, PRODUCTION, ARCHIVED = "candidate", "production", "archived"
# the role of a forecast in ``predictions``: served to consumers, or made alongside to be compared
SERVED, SHADOW = "production", "shadow"

DDL = (
    """
    create table if not exists {ml}.model_registry (
        model_version      varchar(128) not null,
        product_id         varchar(32)  not null,
        kind               varchar(32)  not null comment 'lightgbm, naive_persistence or naive_drift',
        status             varchar(16)  not null default 'candidate' comment 'candidate, production or archived',
        training_cutoff    datetime     not null comment 'UTC: every training target hour is before it',
        trained_at         datetime     not null,
        feature_hash       char(64)     not null,
        checksum           char(64)     not null,
        train_rows         int          not null,
        metadata           longtext     not null comment 'the store''s metadata.json',
        registered_at      datetime(6)  not null,
        status_changed_at  datetime(6)  not null,
        production_product varchar(32) as (case when status = 'production' then product_id end) persistent,
        primary key (model_version),
        unique key uq_model_registry_one_production (production_product),
        key ix_model_registry_product_status (product_id, status),
        key ix_model_registry_product_cutoff (product_id, training_cutoff),
        constraint ck_model_registry_status check (status in ('candidate', 'production', 'archived'))
    ) engine=InnoDB default charset=utf8mb4 collate=utf8mb4_unicode_ci
    """,
    """
    create table if not exists {ml}.model_promotions (
        promotion_id   bigint auto_increment not null,
        product_id     varchar(32)  not null,
        from_version   varchar(128) null comment 'NULL for the first production model',
        to_version     varchar(128) not null,
        window_start   datetime     not null comment 'UTC holdout window the decision was made on (inclusive)',
        window_end     datetime     not null comment 'exclusive',
        metrics        longtext     not null comment 'JSON: scores of every model on the window',
        reason         varchar(1024) not null,
        evidence       varchar(16)  not null default 'holdout'
                       comment 'what decided: holdout (the holdout score) or live (the live record, ml.promote)',
        promoted_at    datetime(6)  not null,
        primary key (promotion_id),
        key ix_model_promotions_product_time (product_id, promoted_at),
        key ix_model_promotions_to (to_version)
    ) engine=InnoDB default charset=utf8mb4 collate=utf8mb4_unicode_ci
    """,
    """
    create table if not exists {ml}.model_evaluations (
        model_version      varchar(128) not null,
        product_id         varchar(32)  not null,
        window_start       datetime     not null,
        window_end         datetime     not null,
        status             varchar(16)  not null comment 'scored or skipped',
        reason             varchar(1024) null comment 'why a model was skipped',
        n                  int          null,
        mae                double       null,
        rmse               double       null,
        mape               double       null,
        direction_accuracy double       null,
        persistence_mae    double       null,
        skill              double       null,
        coverage_80        double       null,
        pinball_10         double       null,
        pinball_90         double       null,
        evaluated_at       datetime(6)  not null,
        primary key (model_version, window_start, window_end),
        key ix_model_evaluations_product_window (product_id, window_end)
    ) engine=InnoDB default charset=utf8mb4 collate=utf8mb4_unicode_ci
    """,
    """
    create table if not exists {ml}.predictions (
        product_id      varchar(32)    not null,
        target_hour     datetime       not null comment 'UTC hour whose close is forecast',
        model_version   varchar(128)   not null,
        role            varchar(16)    not null default 'production'
                        comment 'production (the forecast served for the hour) or shadow (made to be compared)',
        predicted_close decimal(30,12) not null,
        lower_80        decimal(30,12) not null,
        upper_80        decimal(30,12) not null,
        feature_hour    datetime       not null comment 'UTC hour of the feature row (target_hour - 1h)',
        created_at      datetime(6)    not null,
        updated_at      datetime(6)    not null comment 'UTC time the row last changed (values or role)',
        primary key (product_id, target_hour, model_version),
        key ix_predictions_model (model_version, target_hour),
        key ix_predictions_created (created_at),
        key ix_predictions_updated (updated_at),
        key ix_predictions_served (product_id, role, target_hour),
        constraint ck_predictions_role check (role in ('production', 'shadow'))
    ) engine=InnoDB default charset=utf8mb4 collate=utf8mb4_unicode_ci
    """,
    """
    create table if not exists {ml}.forecast_skips (
        product_id    varchar(32)   not null,
        target_hour   datetime      not null comment 'UTC hour the model did not forecast',
        model_version varchar(128)  not null comment 'a shadow model (a candidate) that could not forecast it',
        reason        varchar(1024) not null comment 'why: ineligible (features changed), unreadable, or an error',
        created_at    datetime(6)   not null,
        updated_at    datetime(6)   not null,
        primary key (product_id, target_hour, model_version),
        key ix_forecast_skips_model (model_version, target_hour)
    ) engine=InnoDB default charset=utf8mb4 collate=utf8mb4_unicode_ci
    """,
    """
    create table if not exists {ml}.forecast_outcomes (
        product_id       varchar(32)    not null,
        target_hour      datetime       not null comment 'UTC hour whose close is forecast',
        feature_hour     datetime       not null comment 'the just-closed hour the step ran for (target_hour - 1h)',
        outcome          varchar(16)    not null comment 'model, fallback or none',
        model_version    varchar(128)   null comment 'the production model when outcome = model, else NULL',
        predicted_close  decimal(30,12) null comment 'NULL when outcome = none',
        lower_80         decimal(30,12) null comment 'model only: a fallback has no interval',
        upper_80         decimal(30,12) null,
        base_hour        datetime       null comment 'UTC hour of the close the forecast starts from',
        reason_code      varchar(32)    null comment 'why not the model: candle_missing, warm_up, no_history',
        reason           varchar(1024)  null,
        replaced_outcome varchar(16)    null comment 'the outcome a re-run superseded (e.g. fallback)',
        created_at       datetime(6)    not null comment 'UTC time the hour was first recorded',
        updated_at       datetime(6)    not null comment 'UTC time the outcome last changed',
        primary key (product_id, target_hour),
        key ix_forecast_outcomes_outcome (outcome, target_hour),
        key ix_forecast_outcomes_updated (updated_at),
        constraint ck_forecast_outcomes_outcome check (outcome in ('model', 'fallback', 'none'))
    ) engine=InnoDB default charset=utf8mb4 collate=utf8mb4_unicode_ci
    """,
)

# The ML tables as created before shadow forecasts: every ``predictions`` row was the production model's (the only
# one that forecast), so the role column is added with that default; updated_at starts at created_at.
MIGRATIONS = (
    "alter table {ml}.predictions "
    "add column if not exists role varchar(16) not null default 'production' "
    "comment 'production (the forecast served for the hour) or shadow (made to be compared)' after model_version, "
    "add column if not exists updated_at datetime(6) null comment 'UTC time the row last changed (values or role)', "
    "add index if not exists ix_predictions_updated (updated_at), "
    "add index if not exists ix_predictions_served (product_id, role, target_hour)",
    "update {ml}.predictions set updated_at = created_at where updated_at is null",
    "alter table {ml}.predictions modify updated_at datetime(6) not null "
    "comment 'UTC time the row last changed (values or role)'",
    # what the incremental fct_forecast_outcomes reads changed outcomes by
    "alter table {ml}.forecast_outcomes add index if not exists ix_forecast_outcomes_updated (updated_at)",
)
# ``model_promotions`` from before the live record: every switch was decided on the holdout.
PROMOTION_MIGRATIONS = (
    "alter table {ml}.model_promotions add column if not exists evidence varchar(16) not null default 'holdout' "
    "comment 'what decided: holdout (the holdout score) or live (the live record, ml.promote)' after reason",
)

PREDICTION_COLUMNS = ("role", "predicted_close", "lower_80", "upper_80", "feature_hour")

OUTCOME_COLUMNS = ("feature_hour", "outcome", "model_version", "predicted_close", "lower_80", "upper_80", "base_hour",
                   "reason_code", "reason")


class RegistryError(RuntimeError):
    pass


def ensure_ml_tables(target: Engine | Connection, schemas: Schemas) -> None:
    """Create the ML tables if missing; safe on every run."""
    from sqlalchemy import text
    from sqlalchemy.engine import Engine

    def _apply(conn: Connection) -> None:
        ml = quote_ident(schemas.ml)
        for statement in DDL:
            conn.execute(text(statement.format(ml=ml)))
        # one information_schema read per call: the ALTERs run once, on tables from before these columns
        present = {(str(t), str(c)) for t, c in conn.execute(text(
            "select table_name, column_name from information_schema.columns where table_schema = :s and "
            "((table_name = 'predictions' and column_name = 'role') or "
            "(table_name = 'model_promotions' and column_name = 'evidence'))"), {"s": schemas.ml})}
        for key, statements in ((("predictions", "role"), MIGRATIONS),
                                (("model_promotions", "evidence"), PROMOTION_MIGRATIONS)):
            if key not in present:
                for statement in statements:
                    conn.execute(text(statement.format(ml=ml)))

    if isinstance(target, Engine):
        with target.begin() as conn:
            _apply(conn)
    else:
        _apply(target)


def register(conn: Connection, schemas: Schemas, meta: dict[str, Any]) -> bool:
    """Mirror one stored version as a candidate; a version already registered keeps its status."""
    from sqlalchemy import text

    result = conn.execute(
        text(
            f"insert ignore into {quote_ident(schemas.ml)}.model_registry (model_version, product_id, kind, status, "
            "training_cutoff, trained_at, feature_hash, checksum, train_rows, metadata, registered_at, "
            "status_changed_at) values (:v, :p, :k, 'candidate', :cutoff, :trained, :fh, :cs, :rows, :meta, "
            "utc_timestamp(6), utc_timestamp(6))"
        ),
        {
            "v": meta["version"], "p": meta["product"], "k": meta["kind"],
            "cutoff": meta["training_cutoff"].replace("T", " "), "trained": meta["trained_at"].replace("T", " "),
            "fh": meta["feature_hash"], "cs": meta["checksum"],
            "rows": int((meta.get("row_count") or {}).get("train", 0)),
            "meta": json.dumps(meta, sort_keys=True),
        },
    )
    return bool(result.rowcount)


def production_version(conn: Connection | Engine, schemas: Schemas, product: str) -> str | None:
    from sqlalchemy import text
    from sqlalchemy.engine import Engine

    sql = text(f"select model_version from {quote_ident(schemas.ml)}.model_registry "
               "where product_id = :p and status = 'production'")
    if isinstance(conn, Engine):
        with conn.connect() as c:
            return c.execute(sql, {"p": product}).scalar()
    return conn.execute(sql, {"p": product}).scalar()


def shadow_versions(conn: Connection | Engine, schemas: Schemas, product: str) -> list[str]:
    """The product's registered models that forecast in the shadow of production: every candidate (archived
    models no longer forecast), oldest training cutoff first."""
    from sqlalchemy import text
    from sqlalchemy.engine import Engine

    sql = text(f"select model_version from {quote_ident(schemas.ml)}.model_registry "
               f"where product_id = :p and status = '{CANDIDATE}' order by training_cutoff, model_version")
    if isinstance(conn, Engine):
        with conn.connect() as c:
            return [str(v) for v in c.execute(sql, {"p": product}).scalars()]
    return [str(v) for v in conn.execute(sql, {"p": product}).scalars()]


def switch_production(engine: Engine, schemas: Schemas, product: str, to_version: str,
                      window: tuple[datetime, datetime], metrics: dict[str, Any], reason: str,
                      to_metadata: dict[str, Any] | None = None, evidence: str = "holdout") -> str | None:
    """Make ``to_version`` production in one transaction and record the promotion (with the ``evidence`` that
    decided it: ``holdout`` or ``live``, see ``ml.promote``).

    Returns the previous production version. Locks the product's registry rows, so two concurrent
    promotions serialise instead of leaving two production models (the unique key forbids that anyway).
    """
    from sqlalchemy import text

    ml = quote_ident(schemas.ml)
    with engine.begin() as conn:
        if to_metadata is not None:  # a stored model not mirrored yet (e.g. a store copied from elsewhere)
            register(conn, schemas, to_metadata)
        rows = conn.execute(
            text(f"select model_version, status from {ml}.model_registry where product_id = :p for update"),
            {"p": product},
        ).all()
        statuses = {str(r[0]): str(r[1]) for r in rows}
        if to_version not in statuses:
            raise RegistryError(f"{product}: model {to_version} is not registered; cannot promote it")
        current = next((v for v, s in statuses.items() if s == PRODUCTION), None)
        if current == to_version:
            return current
        if current is not None:
            conn.execute(text(f"update {ml}.model_registry set status = 'archived', status_changed_at = "
                              "utc_timestamp(6) where model_version = :v"), {"v": current})
        conn.execute(text(f"update {ml}.model_registry set status = 'production', status_changed_at = "
                          "utc_timestamp(6) where model_version = :v"), {"v": to_version})
        conn.execute(
            text(f"insert into {ml}.model_promotions (product_id, from_version, to_version, window_start, "
                 "window_end, metrics, reason, evidence, promoted_at) values (:p, :f, :t, :ws, :we, :m, :r, :e, "
                 "utc_timestamp(6))"),
            {"p": product, "f": current, "t": to_version, "ws": window[0], "we": window[1],
             "m": json.dumps(metrics, sort_keys=True, default=str), "r": reason[:1024], "e": evidence},
        )
        return current


def retire_candidates(conn: Connection, schemas: Schemas, product: str, keep_cutoffs: int,
                      keep: str | None = None) -> list[str]:
    """Archive the product's candidates trained before its newest ``keep_cutoffs`` training cutoffs (``keep``, the
    model just chosen, excepted), so the shadow forecasts of each hour stay bounded: every weekly retrain adds
    three candidates, and without this they would all forecast every hour forever. An archived model stays in
    the store and the registry (evaluation still scores it; a promotion may bring it back). Returns them."""
    from sqlalchemy import bindparam, text

    ml = quote_ident(schemas.ml)
    cutoffs = [r[0] for r in conn.execute(text(
        f"select distinct training_cutoff from {ml}.model_registry where product_id = :p "
        "order by training_cutoff desc limit :n"), {"p": product, "n": keep_cutoffs})]
    if len(cutoffs) < keep_cutoffs:
        return []
    old = [str(v) for v in conn.execute(text(
        f"select model_version from {ml}.model_registry where product_id = :p and status = '{CANDIDATE}' "
        "and training_cutoff < :oldest and model_version <> :keep order by model_version"),
        {"p": product, "oldest": cutoffs[-1], "keep": keep or ""}).scalars()]
    if old:
        conn.execute(text(f"update {ml}.model_registry set status = '{ARCHIVED}', status_changed_at = "
                          "utc_timestamp(6) where model_version in :versions").bindparams(
            bindparam("versions", expanding=True)), {"versions": old})
    return old


def record_evaluations(conn: Connection, schemas: Schemas, product: str, window: tuple[datetime, datetime],
                       rows: list[dict[str, Any]]) -> None:
    """Upsert one row per evaluated model (scores, or the reason it was skipped)."""
    from sqlalchemy import text

    if not rows:
        return
    cols = ("n", "mae", "rmse", "mape", "direction_accuracy", "persistence_mae", "skill", "coverage_80",
            "pinball_10", "pinball_90")
    conn.execute(
        text(
            f"insert into {quote_ident(schemas.ml)}.model_evaluations "
            "(model_version, product_id, window_start, window_end, "
            f"status, reason, {', '.join(cols)}, evaluated_at) values (:v, :p, :ws, :we, :status, :reason, "
            f"{', '.join(':' + c for c in cols)}, utc_timestamp(6)) on duplicate key update status = values(status), "
            f"reason = values(reason), {', '.join(f'{c} = values({c})' for c in cols)}, "
            "evaluated_at = values(evaluated_at)"
        ),
        [{"v": r["version"], "p": product, "ws": window[0], "we": window[1], "status": r["status"],
          "reason": (r.get("reason") or None) and str(r["reason"])[:1024],
          **{c: r.get("scores", {}).get(c) for c in cols}} for r in rows],
    )


def upsert_predictions(conn: Connection, schemas: Schemas, rows: list[dict[str, Any]]) -> int:
    """Insert or refresh predictions; a re-run with the same values changes nothing.

    ``created_at`` keeps the first write; ``updated_at`` moves only when a value or the role changes (the
    incremental accuracy mart picks changed rows by it). A ``production`` row makes any other production row of
    its product and hour a ``shadow`` first (a re-run of an hour after a promotion: the hour is now served by the
    new model, as ``forecast_outcomes`` says), so each hour has at most one production forecast.
    """
    from sqlalchemy import text

    if not rows:
        return 0
    ml = quote_ident(schemas.ml)
    served = [r for r in rows if r["role"] == SERVED]
    if served:
        conn.execute(
            text(f"update {ml}.predictions set role = '{SHADOW}', updated_at = utc_timestamp(6) "
                 f"where product_id = :product_id and target_hour = :target_hour and role = '{SERVED}' "
                 "and model_version <> :model_version"),
            [{k: r[k] for k in ("product_id", "target_hour", "model_version")} for r in served],
        )
    changed = " or ".join(f"not ({c} <=> values({c}))" for c in PREDICTION_COLUMNS)
    conn.execute(
        text(
            f"insert into {ml}.predictions "
            f"(product_id, target_hour, model_version, {', '.join(PREDICTION_COLUMNS)}, created_at, updated_at) "
            f"values (:product_id, :target_hour, :model_version, {', '.join(':' + c for c in PREDICTION_COLUMNS)}, "
            "utc_timestamp(6), utc_timestamp(6)) on duplicate key update "
            # MariaDB applies the assignments left to right: updated_at compares before the values change
            f"updated_at = if({changed}, utc_timestamp(6), updated_at), "
            + ", ".join(f"{c} = values({c})" for c in PREDICTION_COLUMNS)
        ),
        rows,
    )
    return len(rows)


def record_skips(conn: Connection, schemas: Schemas, rows: list[dict[str, Any]],
                 forecast: list[dict[str, Any]]) -> None:
    """Record the shadow models that could not forecast an hour (``rows``: product_id, target_hour, model_version,
    reason), and clear the records of those that now did (``forecast``: prediction rows)."""
    from sqlalchemy import text

    ml = quote_ident(schemas.ml)
    if forecast:
        conn.execute(text(f"delete from {ml}.forecast_skips where product_id = :product_id "
                          "and target_hour = :target_hour and model_version = :model_version"),
                     [{k: r[k] for k in ("product_id", "target_hour", "model_version")} for r in forecast])
    if rows:
        conn.execute(
            text(f"insert into {ml}.forecast_skips (product_id, target_hour, model_version, reason, created_at, "
                 "updated_at) values (:product_id, :target_hour, :model_version, :reason, utc_timestamp(6), "
                 "utc_timestamp(6)) on duplicate key update "
                 "updated_at = if(reason <=> values(reason), updated_at, utc_timestamp(6)), reason = values(reason)"),
            [{**r, "reason": str(r["reason"])[:1024]} for r in rows],
        )


def upsert_outcomes(conn: Connection, schemas: Schemas, rows: list[dict[str, Any]]) -> int:
    """Record what the hourly step served per (product, target hour); a re-run with the same answer changes nothing.

    A changed answer (a fallback superseded by the model once the candle arrived) keeps ``created_at``, notes
    the outcome it replaced in ``replaced_outcome`` and moves ``updated_at``. MariaDB applies the assignments
    left to right, each seeing the ones before, so the two bookkeeping columns come first.
    """
    from sqlalchemy import text

    if not rows:
        return 0
    changed = " or ".join(f"not ({c} <=> values({c}))" for c in OUTCOME_COLUMNS)
    conn.execute(
        text(
            f"insert into {quote_ident(schemas.ml)}.forecast_outcomes "
            f"(product_id, target_hour, {', '.join(OUTCOME_COLUMNS)}, "
            f"replaced_outcome, created_at, updated_at) values (:product_id, :target_hour, "
            f"{', '.join(':' + c for c in OUTCOME_COLUMNS)}, null, utc_timestamp(6), utc_timestamp(6)) "
            "on duplicate key update "
            "replaced_outcome = if(outcome <> values(outcome), outcome, replaced_outcome), "
            f"updated_at = if({changed}, utc_timestamp(6), updated_at), "
            + ", ".join(f"{c} = values({c})" for c in OUTCOME_COLUMNS)
        ),
        rows,
    )
    return len(rows)
