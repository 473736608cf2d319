{{
    config(
        materialized='incremental',
        unique_key=['product_id', 'hour'],
        pre_hook=["{{ use_memory_temp_tables() }}", "{{ fail_on_column_drift() }}"],
        post_hook="{{ ensure_keys(
            primary_key=['product_id', 'hour'],
            indexes={
                'ix_fct_candle_features_hour': ['hour'],
                'ix_fct_candle_features_complete': ['is_complete', 'product_id', 'hour'],
                'ix_fct_candle_features_forecastable': ['is_forecastable', 'product_id', 'hour'],
            },
        ) }}",
    )
}}
-- One row per product-hour: price/volume features computed only from that hour and the hours before it,
-- plus the next hour's close as the training target (the only forward-looking columns, named target_*).
--
-- Windows run over the complete hourly spine, so "N rows back" is "N hours back". A window that reaches
-- before the product's first candle yields NULL rather than a value over fewer hours, and a feature that
-- would read a missing hour's filled-in close or volume is NULL (per feature, not per row): a gap blanks
-- only the features whose windows hold it, and the model treats those as missing values.
-- is_forecastable (the row's own candle exists, warm-up reached) is what training, inference and the
-- backtest use; is_complete (every window whole and gap-free) is kept for analysts.

{%- set window_hours = var('feature_window_hours') %}
{%- set return_windows = [6, 24, 72, 168] %}
{%- set volume_windows = [24, 168] %}
{#- the hours whose missing-hour count each window needs: N returns read N + 1 closes, N volumes N hours #}
{%- set missing_hour_windows = [] %}
{%- for hours in return_windows %}{% do missing_hour_windows.append(hours + 1) %}{% endfor %}
{%- for hours in volume_windows %}{% do missing_hour_windows.append(hours) %}{% endfor %}
{%- set spine_relation = ref('int_candles__hourly_spine') %}
{%- if is_incremental() %}
    {%- set ranges = recompute_ranges(spine_relation, var('recompute_hours')) %}
    {#- read window_hours more than is written, so the first recomputed row still sees full windows #}
    {%- set read_filter = recompute_filter(ranges, back_hours=window_hours) %}
    {%- set write_filter = recompute_filter(ranges) %}
{%- else %}
    {%- set read_filter = '1 = 1' %}
    {%- set write_filter = '1 = 1' %}
{%- endif %}

with spine as (
    select * from {{ spine_relation }}
    where {{ read_filter }}
),

hourly_returns as (
    select
        spine.*,
        -- between two real candles only: a missing hour's close is carried, not observed
        case when is_missing_hour = 0 and lag(is_missing_hour) over w = 0
            then {{ log_return('close', 1) }} end as log_return_1h,
        -- exact decimal copies for the rolling sums (see the rolling_sums macro)
        cast({{ log_return('close', 1) }} as decimal(30, 18)) as r,
        volume as v
    from spine
    window w as (partition by product_id order by hour)
),

windowed as (
    select
        product_id,
        hour,
        open,
        high,
        low,
        close,
        volume,
        is_missing_hour,
        hours_since_first_candle,
        log_return_1h,
        {%- for hours in [2, 3, 6, 12, 24, 168] %}
        {{ log_return('close', hours) }} as log_return_{{ hours }}h,
        lag(is_missing_hour, {{ hours }}) over w as is_missing_{{ hours }}h_back,
        {%- endfor %}
        {{ lag_columns('log_return_1h', range(1, 25)) }},
        {%- for rows in return_windows %}
        {{ rolling_sums('r', 'r', rows) }},
        {%- endfor %}
        {%- for rows in volume_windows %}
        {{ rolling_sums('v', 'v', rows) }},
        {%- endfor %}
        {%- for hours in missing_hour_windows %}
        {{ rolling_sum('is_missing_hour', hours) }} as missing_hours_{{ hours }},
        {%- endfor %}
        lead(close) over w as next_close,
        lead(is_missing_hour) over w as next_is_missing_hour
    from hourly_returns
    window w as (partition by product_id order by hour)
),

final as (
    select
        product_id,
        hour,
        open,
        high,
        low,
        close,
        volume,
        is_missing_hour,
        -- returns: a k-hour return needs the close k hours back, and both closes real
        {{ with_history(1, 'log_return_1h') }} as log_return_1h,
        {%- for hours in [2, 3, 6, 12, 24, 168] %}
        {{ with_history(hours, 'case when is_missing_hour = 0 and is_missing_' ~ hours ~ 'h_back = 0 then log_return_'
            ~ hours ~ 'h end') }} as log_return_{{ hours }}h,
        {%- endfor %}
        {%- for k in range(1, 25) %}
        {{ with_history(k + 1, 'log_return_1h_lag_' ~ k) }} as log_return_1h_lag_{{ k }},
        {%- endfor %}
        -- rolling statistics of the 1 h returns ending at this hour: N returns need N hours of history and
        -- N + 1 real closes
        {%- for rows in return_windows %}
        cast({{ with_history(rows, gap_free('missing_hours_' ~ (rows + 1), rolling_mean('r', rows))) }} as double)
            as return_mean_{{ rows }}h,
        {%- endfor %}
        {%- for rows in return_windows %}
        {{ with_history(rows, gap_free('missing_hours_' ~ (rows + 1), rolling_stddev('r', rows))) }}
            as return_std_{{ rows }}h,
        {%- endfor %}
        {{ with_history(24, gap_free('missing_hours_25', 'sqrt(r_sumsq_24)')) }} as realized_vol_24h,
        {{ with_history(168, gap_free('missing_hours_169', 'sqrt(r_sumsq_168)')) }} as realized_vol_168h,
        cast({{ gap_free('is_missing_hour', '(high - low) / close') }} as double) as hl_range,
        cast(case when high > low then (close - low) / (high - low) end as double) as close_position_in_range,
        -- volume windows include the current hour: N volumes need N - 1 hours of history, none of them missing
        {%- for rows in volume_windows %}
        {{ with_history(rows - 1, gap_free('missing_hours_' ~ rows, 'case when ' ~ rolling_stddev('v', rows)
            ~ ' > 0 then (volume - ' ~ rolling_mean('v', rows) ~ ') / ' ~ rolling_stddev('v', rows) ~ ' end')) }}
            as volume_zscore_{{ rows }}h,
        {%- endfor %}
        hour(hour) as hour_of_day,
        weekday(hour) + 1 as day_of_week,
        hours_since_first_candle >= {{ window_hours }} and missing_hours_{{ window_hours + 1 }} = 0 as is_complete,
        -- the model forecasts from every real candle once the warm-up is reached; gaps only blank features
        is_missing_hour = 0 and hours_since_first_candle >= {{ window_hours }} as is_forecastable,
        -- targets: the next hour, unless it is the newest hour or a missing one (no invented labels)
        case when next_is_missing_hour = 0 then next_close end as target_close_1h,
        case when next_is_missing_hour = 0 then ln(next_close / close) end as target_log_return_1h
    from windowed
    where {{ write_filter }}
)

select * from final
