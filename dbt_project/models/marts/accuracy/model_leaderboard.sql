{{
    config(
        materialized='table',
        tags=['accuracy'],
        pre_hook="{{ without_lateral_derived() }}",
        post_hook=["{{ with_lateral_derived() }}", "{{ ensure_keys(primary_key=['product_id', 'model_version']) }}"],
    )
}}
-- One row per product and model with at least one realized forecast: how it did over the trailing 24 h and
-- 168 h of realized target hours (ending at the product's newest realized hour, `as_of_hour`) and all time.
--
-- Fair ranking: within a window, only models with a realized forecast on *every* hour of the window that has any
-- realized forecast are ranked, so every ranked model is scored on exactly the same hours, and persistence's MAE
-- (the skill's reference) is taken on those same hours. A model missing some hour (trained or registered during
-- the window, archived during it, skipped for an hour) keeps its own figures but gets no rank for that window.
-- Shadow forecasts (every non-archived model forecasts every hour) make the ranked set the live models.
--
-- A small table rebuilt every run from bounded reads: the windows through fct_prediction_accuracy's target_hour
-- index, the all-time figures from fct_model_accuracy_monthly (a few rows per model), so its cost is flat in history.

{#- fct_model_accuracy_monthly is built before this model: the window's start is a literal (macros/ml). #}
{%- set window_start = leaderboard_window_start(ref('fct_model_accuracy_monthly')) %}

with monthly as (
    select * from {{ ref('fct_model_accuracy_monthly') }}
),

as_of as (
    select
        product_id,
        max(last_realized_hour) as as_of_hour
    from monthly
    group by product_id
),

recent as (
    select
        accuracy.product_id,
        accuracy.model_version,
        accuracy.target_hour,
        accuracy.abs_error,
        accuracy.persistence_abs_error,
        accuracy.is_inside_interval,
        case when accuracy.target_hour > as_of.as_of_hour - interval 24 hour then 1 else 0 end as in_24h
    from {{ ref('fct_prediction_accuracy') }} as accuracy
    inner join as_of
        on as_of.product_id = accuracy.product_id
    where accuracy.is_realized = 1
        {%- if window_start is not none %}
        -- the literal bound the target_hour index reads from; the join keeps each product's own window
        and accuracy.target_hour > timestamp {{ sql_string(window_start) }}
        {%- endif %}
        and accuracy.target_hour > as_of.as_of_hour - interval 168 hour
),

window_hours as (
    -- the hours of each window with at least one realized forecast: a ranked model has one on every one of them
    select
        product_id,
        count(distinct target_hour) as hours_168h,
        count(distinct case when in_24h = 1 then target_hour end) as hours_24h
    from recent
    group by product_id
),

windowed as (
    select
        product_id,
        model_version,
        sum(in_24h) as n_24h,
        sum(case when in_24h = 1 then abs_error end) as sum_abs_error_24h,
        sum(case when in_24h = 1 then persistence_abs_error end) as sum_persistence_abs_error_24h,
        count(*) as n_168h,
        sum(abs_error) as sum_abs_error_168h,
        sum(persistence_abs_error) as sum_persistence_abs_error_168h,
        avg(is_inside_interval) as coverage_80_168h
    from recent
    group by
        product_id,
        model_version
),

all_time as (
    select
        product_id,
        model_version,
        min(first_realized_hour) as first_target_hour,
        max(last_realized_hour) as last_target_hour,
        sum(n_realized) as n_realized,
        sum(sum_abs_error) as sum_abs_error,
        sum(sum_persistence_abs_error) as sum_persistence_abs_error
    from monthly
    group by
        product_id,
        model_version
    having sum(n_realized) > 0
),

registry as (
    select * from {{ ref('stg_ml__model_registry') }}
),

promotions as (
    select
        to_version,
        max(promoted_at) as last_promoted_at
    from {{ ref('stg_ml__model_promotions') }}
    group by to_version
),

scored as (
    select
        all_time.product_id,
        all_time.model_version,
        registry.model_kind,
        registry.status,
        promotions.last_promoted_at,
        as_of.as_of_hour,
        all_time.first_target_hour,
        all_time.last_target_hour,
        all_time.n_realized,
        coalesce(window_hours.hours_24h, 0) as window_hours_24h,
        coalesce(windowed.n_24h, 0) as n_24h,
        windowed.sum_abs_error_24h / nullif(windowed.n_24h, 0) as mae_24h,
        windowed.sum_persistence_abs_error_24h / nullif(windowed.n_24h, 0) as persistence_mae_24h,
        cast(1 - windowed.sum_abs_error_24h / nullif(windowed.sum_persistence_abs_error_24h, 0) as double)
            as skill_24h,
        case when windowed.n_24h > 0 and windowed.n_24h = window_hours.hours_24h then 1 else 0 end as is_ranked_24h,
        coalesce(window_hours.hours_168h, 0) as window_hours_168h,
        coalesce(windowed.n_168h, 0) as n_168h,
        windowed.sum_abs_error_168h / nullif(windowed.n_168h, 0) as mae_168h,
        windowed.sum_persistence_abs_error_168h / nullif(windowed.n_168h, 0) as persistence_mae_168h,
        cast(1 - windowed.sum_abs_error_168h / nullif(windowed.sum_persistence_abs_error_168h, 0) as double)
            as skill_168h,
        case when windowed.n_168h > 0 and windowed.n_168h = window_hours.hours_168h then 1 else 0 end
            as is_ranked_168h,
        cast(windowed.coverage_80_168h as double) as coverage_80_168h,
        all_time.sum_abs_error / all_time.n_realized as mae_all,
        all_time.sum_persistence_abs_error / all_time.n_realized as persistence_mae_all,
        cast(1 - all_time.sum_abs_error / nullif(all_time.sum_persistence_abs_error, 0) as double) as skill_all
    from all_time
    inner join as_of
        on as_of.product_id = all_time.product_id
    left join windowed
        on windowed.product_id = all_time.product_id
        and windowed.model_version = all_time.model_version
    left join window_hours
        on window_hours.product_id = all_time.product_id
    left join registry
        on registry.model_version = all_time.model_version
    left join promotions
        on promotions.to_version = all_time.model_version
),

final as (
    select
        scored.*,
        -- rank among the ranked models only (same hours); NULL for a model not ranked in that window
        case when is_ranked_24h = 1 then rank() over (
            partition by product_id, is_ranked_24h
            order by mae_24h
        ) end as rank_24h,
        case when is_ranked_168h = 1 then rank() over (
            partition by product_id, is_ranked_168h
            order by mae_168h
        ) end as rank_168h
    from scored
)

select * from final
