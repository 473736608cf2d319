-- The spine holds every hour from each product's first to its last candle exactly once, every hour is
-- aligned to the hour, and every real candle is in it with its own values (nothing dropped or altered).
-- Returns one row per violation.

with spine as (
    select * from {{ ref('int_candles__hourly_spine') }}
),

candles as (
    select * from {{ ref('stg_coinbase__candles') }}
),

spine_bounds as (
    select
        product_id,
        min(hour) as first_hour,
        max(hour) as last_hour,
        count(*) as hours,
        count(distinct hour) as distinct_hours
    from spine
    group by product_id
),

candle_bounds as (
    select
        product_id,
        min(hour) as first_hour,
        max(hour) as last_hour
    from candles
    group by product_id
),

gaps_or_bounds as (
    select
        coalesce(spine_bounds.product_id, candle_bounds.product_id) as product_id,
        'spine does not span first to last candle hour by hour' as problem,
        spine_bounds.first_hour as hour
    from spine_bounds
    left join candle_bounds
        on candle_bounds.product_id = spine_bounds.product_id
    where candle_bounds.product_id is null
        or spine_bounds.first_hour <> candle_bounds.first_hour
        or spine_bounds.last_hour <> candle_bounds.last_hour
        or spine_bounds.hours <> timestampdiff(hour, spine_bounds.first_hour, spine_bounds.last_hour) + 1
        or spine_bounds.distinct_hours <> spine_bounds.hours
),

misaligned as (
    select
        product_id,
        'hour not aligned to the hour' as problem,
        hour
    from spine
    where minute(hour) <> 0 or second(hour) <> 0
),

dropped_or_altered as (
    select
        candles.product_id,
        'candle missing from the spine or changed' as problem,
        candles.hour
    from candles
    left join spine
        on spine.product_id = candles.product_id
        and spine.hour = candles.hour
    where spine.product_id is null
        or spine.is_missing_hour <> 0
        or spine.close <> candles.close
        or spine.volume <> candles.volume
),

invented as (
    select
        spine.product_id,
        'hour flagged missing but a candle exists, or filled wrongly' as problem,
        spine.hour
    from spine
    left join candles
        on candles.product_id = spine.product_id
        and candles.hour = spine.hour
    where spine.is_missing_hour = 1
        and (
            candles.product_id is not null
            or spine.volume <> 0
            or spine.open <> spine.close
            or spine.high <> spine.close
            or spine.low <> spine.close
        )
),

final as (
    select * from gaps_or_bounds
    union all
    select * from misaligned
    union all
    select * from dropped_or_altered
    union all
    select * from invented
)

select * from final
