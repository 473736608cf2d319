{{ config(materialized='view') }}
-- The newest complete feature row of every product: what an analyst or a dashboard reads for "now".
-- A product whose newest hour is incomplete (a missing hour inside its windows) shows its last complete
-- hour instead; compare `hour` with the current hour before acting on it.

with features as (
    select * from {{ ref('fct_candle_features') }}
),

newest_complete as (
    -- answered from the ix_fct_candle_features_complete index (is_complete, product_id, hour)
    select
        product_id,
        max(hour) as hour
    from features
    where is_complete = 1
    group by product_id
),

final as (
    select features.*
    from features
    inner join newest_complete
        on newest_complete.product_id = features.product_id
        and newest_complete.hour = features.hour
)

select * from final
