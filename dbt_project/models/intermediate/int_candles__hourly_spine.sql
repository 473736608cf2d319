{{
    config(
        materialized='incremental',
        unique_key=['product_id', 'hour'],
        pre_hook=["{{ use_memory_temp_tables() }}", "{{ fail_on_column_drift() }}"],
        post_hook="{{ ensure_keys(primary_key=['product_id', 'hour']) }}",
    )
}}
-- Every hour of every product from its first to its last candle. Hours the API left out are kept as rows
-- flagged is_missing_hour, priced at the last real close (open = high = low = close) with volume 0, so
-- downstream windows can count on "N rows back = N hours back" and nothing is dropped silently.

{%- set candles_relation = ref('stg_coinbase__candles') -%}
{%- if is_incremental() -%}
    {%- set candle_filter = recompute_filter(
        recompute_ranges(candles_relation, var('recompute_hours'), align_to_upstream_row=true)
    ) -%}
{%- else -%}
    {%- set candle_filter = '1 = 1' -%}
{%- endif %}

with candles as (
    select * from {{ candles_relation }}
    where {{ candle_filter }}
),

first_candles as (
    -- each product's very first candle, however far back: answered from the primary key alone
    select
        product_id,
        min(hour) as first_hour
    from {{ candles_relation }}
    group by product_id
),

ranges as (
    select
        product_id,
        min(hour) as range_start,
        max(hour) as range_end
    from candles
    group by product_id
),

hour_offsets as (
    {{ hour_offsets(max_hours_span(candles_relation, candle_filter)) }}
),

spine as (
    select
        ranges.product_id,
        ranges.range_start + interval hour_offsets.n hour as hour
    from ranges
    inner join hour_offsets
        on hour_offsets.n <= timestampdiff(hour, ranges.range_start, ranges.range_end)
),

joined as (
    select
        spine.product_id,
        spine.hour,
        candles.hour is null as is_missing_hour,
        candles.open,
        candles.high,
        candles.low,
        candles.close,
        candles.volume
    from spine
    left join candles
        on candles.product_id = spine.product_id
        and candles.hour = spine.hour
),

filled as (
    select
        joined.*,
        -- A missing hour takes the newest real close before it. A correlated lookup on the primary key,
        -- run only for missing hours: a running max() window would be O(n²) on MariaDB 10.11.
        case
            when joined.is_missing_hour then (
                select previous.close
                from {{ candles_relation }} as previous
                where previous.product_id = joined.product_id
                  and previous.hour < joined.hour
                order by previous.hour desc
                limit 1
            )
        end as carried_close
    from joined
),

final as (
    select
        filled.product_id,
        filled.hour,
        coalesce(filled.open, filled.carried_close) as open,
        coalesce(filled.high, filled.carried_close) as high,
        coalesce(filled.low, filled.carried_close) as low,
        coalesce(filled.close, filled.carried_close) as close,
        coalesce(filled.volume, 0) as volume,
        filled.is_missing_hour,
        timestampdiff(hour, first_candles.first_hour, filled.hour) as hours_since_first_candle
    from filled
    inner join first_candles
        on first_candles.product_id = filled.product_id
)

select * from final
