{{
    config(
        materialized='incremental',
        unique_key=['product_id', 'target_hour'],
        tags=['accuracy'],
        pre_hook="{{ fail_on_column_drift() }}",
        post_hook="{{ ensure_keys(
            primary_key=['product_id', 'target_hour'],
            indexes={
                'ix_fct_forecast_outcomes_outcome': ['outcome', 'target_hour'],
                'ix_fct_forecast_outcomes_updated': ['updated_at'],
            },
        ) }}",
    )
}}
-- One row per product and target hour the hourly step ran for: what it served (the production model's
-- forecast, a labelled persistence fallback, or no forecast) and, once the hour has closed, how far off it was.
-- Fallbacks are kept here, apart: fct_prediction_accuracy and model_leaderboard score model forecasts only.
-- Incremental like fct_prediction_accuracy (forecast_recompute_bounds): the outcomes recorded or changed since the
-- last run and the newest hours whose realized close may have changed; a full refresh gives the same rows.

{%- set bounds = forecast_recompute_bounds() %}

with outcomes as (
    {{ select_forecasts_to_score(ref('stg_ml__forecast_outcomes'), bounds) }}
),

registry as (
    select * from {{ ref('stg_ml__model_registry') }}
),

features as (
    select
        product_id,
        hour,
        close,
        is_missing_hour
    from {{ ref('fct_candle_features') }}
),

joined as (
    select
        outcomes.product_id,
        outcomes.target_hour,
        outcomes.feature_hour,
        outcomes.outcome,
        outcomes.model_version,
        registry.model_kind,
        outcomes.predicted_close,
        outcomes.lower_80,
        outcomes.upper_80,
        outcomes.base_hour,
        base.close as base_close,
        outcomes.reason_code,
        outcomes.reason,
        outcomes.replaced_outcome,
        -- a missing hour's close is carried forward, not observed: it realizes nothing
        case when realized.is_missing_hour = 0 then realized.close end as realized_close,
        outcomes.created_at,
        outcomes.updated_at
    from outcomes
    left join registry
        on registry.model_version = outcomes.model_version
    left join features as base
        on base.product_id = outcomes.product_id
        and base.hour = outcomes.base_hour
    left join features as realized
        on realized.product_id = outcomes.product_id
        and realized.hour = outcomes.target_hour
),

final as (
    select
        product_id,
        target_hour,
        feature_hour,
        outcome,
        case when outcome = 'model' then 1 else 0 end as is_model_forecast,
        model_version,
        model_kind,
        predicted_close,
        lower_80,
        upper_80,
        base_hour,
        base_close,
        timestampdiff(hour, base_hour, target_hour) as horizon_hours,
        reason_code,
        reason,
        replaced_outcome,
        realized_close,
        case when realized_close is not null and predicted_close is not null then 1 else 0 end as is_realized,
        abs(predicted_close - realized_close) as abs_error,
        created_at,
        updated_at
    from joined
)

select * from final
