{{ config(materialized='view') }}
-- The newest forecastable feature row of every product: what an analyst, a dashboard or a forecast reads for
-- "now". Forecastable (is_forecastable = 1: the hour's own candle exists, warm-up reached) rather than complete,
-- so a missing hour makes this lag only while that hour is the newest one, never for the week its windows
-- hold it; the features whose windows hold a missing hour are NULL in such a row (is_complete = 0).

with features as (
    select * from {{ ref('fct_candle_features') }}
),

newest_forecastable as (
    -- answered from the ix_fct_candle_features_forecastable index (is_forecastable, product_id, hour)
    select
        product_id,
        max(hour) as hour
    from features
    where is_forecastable = 1
    group by product_id
),

final as (
    select features.*
    from features
    inner join newest_forecastable
        on newest_forecastable.product_id = features.product_id
        and newest_forecastable.hour = features.hour
)

select * from final
