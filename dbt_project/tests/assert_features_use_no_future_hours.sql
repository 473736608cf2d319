-- No lookahead: features recomputed by joining each row only to itself and the hours *before* it equal
-- the mart's values. A window frame that leaked a later hour (or was shifted by one) fails here.
-- Checks the 1 h, 24 h and 168 h returns, every return lag, and the 24 h rolling mean, std and realized
-- volatility; a return or window that reads a missing hour must be NULL. (The pytest suite also recomputes
-- rows with the future deleted.)
-- Checked on each product's first 200 and newest 720 hours (the partial-window edge, and the hours each
-- incremental run rewrites), which keeps the test cheap at any history length.
-- Returns one row per row with a mismatching feature, naming the features.

{%- set tolerance = 1e-12 %}
{%- set checks = [
    ('log_return_1h', 'case when missing_0 = 0 and missing_1 = 0 then ln(close_0 / close_1) end'),
    ('log_return_24h', 'case when missing_0 = 0 and missing_24 = 0 then ln(close_0 / close_24) end'),
    ('return_mean_24h', 'mean_24h'),
    ('return_std_24h', 'std_24h'),
    ('realized_vol_24h', 'vol_24h'),
] %}
{#- a return between two real candles only: a missing hour's close is filled in, not observed #}
{%- set weekly_return = 'case when features.is_missing_hour = 0 and week_ago.is_missing_hour = 0 '
    ~ 'then ln(features.close / week_ago.close) end' %}
{%- for k in range(1, 25) %}
    {%- do checks.append(('log_return_1h_lag_' ~ k, 'return_' ~ k)) %}
{%- endfor %}

with features as (
    select * from {{ ref('fct_candle_features') }}
),

bounds as (
    select
        product_id,
        min(hour) as first_hour,
        max(hour) as last_hour
    from features
    group by product_id
),

checked as (
    select features.*
    from features
    inner join bounds
        on bounds.product_id = features.product_id
    where features.hour < bounds.first_hour + interval 200 hour
        or features.hour > bounds.last_hour - interval 720 hour
),

hours_back as (
    {{ hour_offsets(24) }}
),

recomputed_from_past as (
    -- each row joined to itself and the 24 hours before it, one primary-key lookup each, and nothing later
    select
        features.product_id,
        features.hour,
        {%- for column, _ in checks %}
        max(features.{{ column }}) as {{ column }},
        {%- endfor %}
        max(case when past.hour = features.hour then past.close end) as close_0,
        max(case when past.hour = features.hour - interval 1 hour then past.close end) as close_1,
        max(case when past.hour = features.hour - interval 24 hour then past.close end) as close_24,
        max(case when past.hour = features.hour then past.is_missing_hour end) as missing_0,
        max(case when past.hour = features.hour - interval 1 hour then past.is_missing_hour end) as missing_1,
        max(case when past.hour = features.hour - interval 24 hour then past.is_missing_hour end) as missing_24,
        {%- for k in range(1, 25) %}
        max(case when past.hour = features.hour - interval {{ k }} hour then past.log_return_1h end) as return_{{ k }},
        {%- endfor %}
        case when count(case when past.hour > features.hour - interval 24 hour then past.log_return_1h end) = 24
            then avg(case when past.hour > features.hour - interval 24 hour then past.log_return_1h end) end as mean_24h,
        case when count(case when past.hour > features.hour - interval 24 hour then past.log_return_1h end) = 24
            then stddev_samp(case when past.hour > features.hour - interval 24 hour then past.log_return_1h end) end as std_24h,
        case when count(case when past.hour > features.hour - interval 24 hour then past.log_return_1h end) = 24
            then sqrt(sum(case when past.hour > features.hour - interval 24 hour then past.log_return_1h * past.log_return_1h end)) end as vol_24h
    -- straight_join keeps this order: the sampled rows first, then 25 primary-key lookups each (left to
    -- itself, MariaDB scans the whole mart once per offset)
    from checked as features
    straight_join hours_back
    straight_join features as past
        on past.product_id = features.product_id
        and past.hour = features.hour - interval hours_back.n hour
    group by features.product_id, features.hour
),

mismatches as (
    select
        product_id,
        hour,
        concat_ws(', '
        {%- for column, expected in checks %},
            case
                when not ({{ column }} <=> {{ expected }})
                    and not coalesce(abs({{ column }} - {{ expected }}) <= {{ tolerance }}, false)
                then '{{ column }}'
            end
        {%- endfor %}
        ) as mismatched_columns
    from recomputed_from_past
),

weekly_return_mismatches as (
    select
        features.product_id,
        features.hour,
        'log_return_168h' as mismatched_columns
    from checked as features
    left join features as week_ago
        on week_ago.product_id = features.product_id
        and week_ago.hour = features.hour - interval 168 hour
    where not (features.log_return_168h <=> {{ weekly_return }})
        and not coalesce(abs(features.log_return_168h - {{ weekly_return }}) <= {{ tolerance }}, false)
),

final as (
    select * from mismatches
    where mismatched_columns <> ''
    union all
    select * from weekly_return_mismatches
)

select * from final
