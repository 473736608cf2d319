{{
    config(
        materialized='incremental',
        unique_key=['product_id', 'target_hour', 'model_version'],
        tags=['accuracy'],
        pre_hook="{{ fail_on_column_drift() }}",
        post_hook="{{ ensure_keys(
            primary_key=['product_id', 'target_hour', 'model_version'],
            indexes={
                'ix_fct_prediction_accuracy_model': ['model_version', 'target_hour'],
                'ix_fct_prediction_accuracy_hour': ['target_hour'],
                'ix_fct_prediction_accuracy_updated': ['updated_at'],
            },
        ) }}",
    )
}}
-- One row per prediction (production and shadow: `role`) with what actually happened: the realized close of the
-- target hour, the error, the error persistence (previous close) would have made on the same hour, and whether
-- the 80% interval held it. A prediction whose target hour has not closed yet (or was a missing hour) has
-- is_realized = 0 and NULL errors. Incremental: each run re-scores only the forecasts written since the last run
-- and the recent hours whose realized close may have changed (forecast_recompute_bounds), so its cost is flat in
-- history; a full refresh gives the same rows.

{%- set bounds = forecast_recompute_bounds() %}

with predictions as (
    {{ select_forecasts_to_score(ref('stg_ml__predictions'), bounds) }}
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
        predictions.product_id,
        predictions.target_hour,
        predictions.model_version,
        predictions.role,
        registry.model_kind,
        predictions.feature_hour,
        predictions.predicted_close,
        predictions.lower_80,
        predictions.upper_80,
        base.close as previous_close,
        -- a missing hour's close is carried forward, not observed: it realizes nothing
        case when realized.is_missing_hour = 0 then realized.close end as realized_close,
        predictions.created_at,
        predictions.updated_at
    from predictions
    left join registry
        on registry.model_version = predictions.model_version
    left join features as base
        on base.product_id = predictions.product_id
        and base.hour = predictions.feature_hour
    left join features as realized
        on realized.product_id = predictions.product_id
        and realized.hour = predictions.target_hour
),

final as (
    select
        product_id,
        target_hour,
        model_version,
        role,
        model_kind,
        feature_hour,
        predicted_close,
        lower_80,
        upper_80,
        previous_close,
        realized_close,
        case when realized_close is not null then 1 else 0 end as is_realized,
        predicted_close - realized_close as error,
        abs(predicted_close - realized_close) as abs_error,
        cast(abs(predicted_close - realized_close) / realized_close * 100 as double) as abs_pct_error,
        abs(previous_close - realized_close) as persistence_abs_error,
        case
            when realized_close is null then null
            when realized_close between lower_80 and upper_80 then 1
            else 0
        end as is_inside_interval,
        upper_80 - lower_80 as interval_width,
        created_at,
        updated_at
    from joined
)

select * from final
