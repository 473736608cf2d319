{{
    config(
        materialized='incremental',
        unique_key=['product_id', 'model_version', 'month_start'],
        tags=['accuracy'],
        pre_hook="{{ fail_on_column_drift() }}",
        post_hook="{{ ensure_keys(primary_key=['product_id', 'model_version', 'month_start']) }}",
    )
}}
-- One row per product, model and calendar month (UTC) of target hours: how many forecasts, how many realized,
-- and the sums the all-time figures are made of (so model_leaderboard adds up a few rows per model instead of
-- reading every forecast ever scored). Incremental: each run recomputes whole the months holding a forecast that
-- fct_prediction_accuracy re-scored (written since the last run, or in the recent hours whose realized close may
-- have changed), read through that table's primary key and updated_at index; a full refresh gives the same rows.

{%- set bounds = forecast_recompute_bounds(hour_column='last_target_hour', updated_column='max_updated_at') %}
{%- set month_filter = '1 = 1' %}
{%- if bounds.ranges | length > 0 %}
    {#- the months of the recent hours, and the months of every forecast written since the last run #}
    {%- set months = [] %}
    {%- for r in bounds.ranges %}
        {%- do months.append('(product_id = ' ~ sql_string(r.product_id) ~ ' and target_hour >= timestamp '
            ~ sql_string(r.recompute_from[:7] ~ '-01 00:00:00') ~ ')') %}
    {%- endfor %}
    {%- if bounds.changed_since is not none %}
        {%- set changed -%}
            select distinct
                product_id,
                date_format(target_hour, '%Y-%m-01 00:00:00') as month_start
            from {{ ref('fct_prediction_accuracy') }}
            where updated_at >= timestamp {{ sql_string(bounds.changed_since) }}
        {%- endset -%}
        {%- for row in run_query(changed).rows %}
            {%- do months.append('(product_id = ' ~ sql_string(row[0]) ~ ' and target_hour >= timestamp '
                ~ sql_string(row[1]) ~ ' and target_hour < timestamp ' ~ sql_string(row[1])
                ~ ' + interval 1 month)') %}
        {%- endfor %}
    {%- endif %}
    {%- set products = [] %}
    {%- for r in bounds.ranges %}{% do products.append(sql_string(r.product_id)) %}{% endfor %}
    {#- a product this table does not hold yet: all of it #}
    {%- do months.append('product_id not in (' ~ products | join(', ') ~ ')') %}
    {%- set month_filter = '(' ~ months | join('\n        or ') ~ ')' %}
{%- endif %}

with accuracy as (
    select * from {{ ref('fct_prediction_accuracy') }}
    where {{ month_filter }}
),

monthly as (
    select
        product_id,
        model_version,
        cast(date_format(target_hour, '%Y-%m-01') as datetime) as month_start,
        count(*) as n_forecasts,
        sum(is_realized) as n_realized,
        min(case when is_realized = 1 then target_hour end) as first_realized_hour,
        max(case when is_realized = 1 then target_hour end) as last_realized_hour,
        max(target_hour) as last_target_hour,
        sum(abs_error) as sum_abs_error,
        sum(persistence_abs_error) as sum_persistence_abs_error,
        sum(is_inside_interval) as n_inside_interval,
        max(updated_at) as max_updated_at
    from accuracy
    group by
        product_id,
        model_version,
        cast(date_format(target_hour, '%Y-%m-01') as datetime)
),

final as (
    select
        product_id,
        model_version,
        month_start,
        n_forecasts,
        n_realized,
        first_realized_hour,
        last_realized_hour,
        last_target_hour,
        sum_abs_error,
        sum_persistence_abs_error,
        n_inside_interval,
        cast(sum_abs_error / nullif(n_realized, 0) as double) as mae,
        cast(1 - sum_abs_error / nullif(sum_persistence_abs_error, 0) as double) as skill,
        cast(n_inside_interval / nullif(n_realized, 0) as double) as coverage_80,
        max_updated_at
    from monthly
)

select * from final
