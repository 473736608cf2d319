-- target_close_1h is the next hour's close, and NULL exactly when there is no real next hour (the
-- product's newest hour, or a next hour the API left out); target_log_return_1h agrees with it.
-- Returns one row per violation.

with features as (
    select * from {{ get_where_subquery(ref('fct_candle_features')) }}
),

spine as (
    select * from {{ ref('int_candles__hourly_spine') }}
),

paired as (
    select
        features.product_id,
        features.hour,
        features.close,
        features.target_close_1h,
        features.target_log_return_1h,
        next_hour.close as next_close,
        next_hour.is_missing_hour as next_is_missing_hour
    from features
    left join spine as next_hour
        on next_hour.product_id = features.product_id
        and next_hour.hour = features.hour + interval 1 hour
),

final as (
    select *
    from paired
    where
        -- a real next hour: the target is its close
        (next_is_missing_hour = 0 and (
            target_close_1h is null
            or target_close_1h <> next_close
            or abs(target_log_return_1h - ln(next_close / close)) > 1e-12
        ))
        -- no real next hour: no target
        or (coalesce(next_is_missing_hour, 1) = 1 and (
            target_close_1h is not null or target_log_return_1h is not null
        ))
)

select * from final
