-- No lookahead: features recomputed by joining each row only to itself and the hours *before* it equal
-- the mart's values. A window frame that leaked a later hour (or was shifted by one) fails here.
-- Checks the 1 h, 24 h and 168 h returns, every return lag, and the 24 h rolling mean, std and realized
-- volatility; a return or window that reads a missing hour must be NULL. (The pytest suite also recomputes
-- rows with the future deleted.)
-- Checked on each product's newest `recompute_hours` + 24 hours (the hours each incremental run rewrites, and a
-- day before them) and, unless the build tests recent rows only (`tests_scope: recent`, the hourly builds), its
-- first 200 (the partial-window edge), which keeps the test cheap at any history length: its cost grows with the
-- products only (about 2 s for 50, on 2 cores).
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
    where features.hour > bounds.last_hour - interval {{ var('recompute_hours') + 24 }} hour
        {%- if var('tests_scope', 'all') == 'all' %}
        or features.hour < bounds.first_hour + interval 200 hour
        {%- endif %}
),

past as (
    -- each row joined to itself and each of the 24 hours before it, one primary-key lookup per offset, and
    -- nothing later; as columns, not rows, so no GROUP BY (its temporary table grew with the products: 50
    -- products took 100 times one product's time)
    select
        features.*,
        {%- for k in range(0, 25) %}
        past_{{ k }}.log_return_1h as return_at_{{ k }},
        {%- endfor %}
        {%- for k in (0, 1, 24) %}
        past_{{ k }}.close as close_{{ k }},
        past_{{ k }}.is_missing_hour as missing_{{ k }},
        {%- endfor %}
        ({% for k in range(0, 24) %}past_{{ k }}.log_return_1h{{ ' + ' if not loop.last }}{% endfor %}) / 24 as mean_24h
    from checked as features
    {%- for k in range(0, 25) %}
    left join features as past_{{ k }}
        on past_{{ k }}.product_id = features.product_id
        and past_{{ k }}.hour = features.hour - interval {{ k }} hour
    {%- endfor %}
),

recomputed_from_past as (
    -- a sum over the 24 hours is NULL when any of them has no return, as the windows' own rule wants
    select
        past.*,
        {%- for k in range(1, 25) %}
        return_at_{{ k }} as return_{{ k }},
        {%- endfor %}
        sqrt(({% for k in range(0, 24) %}pow(return_at_{{ k }} - mean_24h, 2){{ ' + ' if not loop.last }}{% endfor %}) / 23) as std_24h,
        sqrt({% for k in range(0, 24) %}return_at_{{ k }} * return_at_{{ k }}{{ ' + ' if not loop.last }}{% endfor %}) as vol_24h
    from past
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
