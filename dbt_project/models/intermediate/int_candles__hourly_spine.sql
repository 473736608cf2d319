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
        candles.volume,
        -- real candles so far: a missing hour shares the number of the newest real candle before it.
        -- (Not count(candles.hour): MariaDB 10.11 counts the outer join's NULLs there, the column being
        -- NOT NULL in its table.)
        sum(case when candles.hour is null then 0 else 1 end) over (
            partition by spine.product_id
            order by spine.hour
            rows between unbounded preceding and current row
        ) as candle_number
    from spine
    left join candles
        on candles.product_id = spine.product_id
        and candles.hour = spine.hour
),

numbered_candles as (
    -- the same numbering over the real candles alone. (A correlated "newest close before this hour"
    -- lookup scans the product's history on MariaDB 10.11, and a running max() window is O(n²).)
    select
        product_id,
        close,
        row_number() over (partition by product_id order by hour) as candle_number
    from candles
),

final as (
    select
        joined.product_id,
        joined.hour,
        coalesce(joined.open, carried.close) as open,
        coalesce(joined.high, carried.close) as high,
        coalesce(joined.low, carried.close) as low,
        coalesce(joined.close, carried.close) as close,
        coalesce(joined.volume, 0) as volume,
        joined.is_missing_hour,
        timestampdiff(hour, first_candles.first_hour, joined.hour) as hours_since_first_candle
    from joined
    inner join first_candles
        on first_candles.product_id = joined.product_id
    left join numbered_candles as carried
        on joined.is_missing_hour = 1
        and carried.product_id = joined.product_id
        and carried.candle_number = joined.candle_number
)

select * from final
