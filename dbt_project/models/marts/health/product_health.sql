{{
    config(
        materialized='table',
        tags=['health'],
        post_hook="{{ ensure_keys(primary_key=['product_id']) }}",
    )
}}
-- One row per product: is the hourly pipeline healthy as of the cycle's hour? How far raw data lags, whether
-- every hour got a forecast, how the production model does against persistence and how often its 80%
-- interval holds, and the overall status under the thresholds of dbt_project.yml (vars health_*), which the
-- tests of _health__models.yml check with warn and error severities.
--
-- The cycle's hour comes from the caller, never the clock: the dbt var `cycle_hour`, or the env var
-- CANDLECAST_CYCLE_HOUR (what the hourly step sets, to its interval's end: the hour it forecasts; a --vars
-- value that changes every hour would make dbt re-parse the whole project on every run, an env var only this
-- file). Without either, the newest raw hour of any product + 1 h.
{%- set requested = var('cycle_hour', env_var('CANDLECAST_CYCLE_HOUR', '')) %}
{%- if requested is not none and requested != '' %}
    {%- set parsed = modules.datetime.datetime.fromisoformat(requested | string) %}
    {%- if parsed.tzinfo is not none or parsed.minute or parsed.second or parsed.microsecond %}
        {{ exceptions.raise_compiler_error("the cycle hour (var cycle_hour, env CANDLECAST_CYCLE_HOUR) must be a UTC hour "
                                           ~ "without an offset, like '2024-01-08 13:00', got " ~ requested) }}
    {%- endif %}
    {%- set cycle_hour_sql = "cast('" ~ parsed.strftime('%Y-%m-%d %H:%M:%S') ~ "' as datetime)" %}
{%- else %}
    {%- set cycle_hour_sql = none %}
{%- endif %}

with candles as (
    select
        product_id,
        hour
    from {{ ref('stg_coinbase__candles') }}
),

-- what each hour served: the production model's forecast or a labelled fallback, never a shadow's (shadow
-- forecasts live in predictions with role = 'shadow', and forecast_outcomes names the production one)
outcomes as (
    select * from {{ ref('fct_forecast_outcomes') }}
),

registry as (
    select * from {{ ref('stg_ml__model_registry') }}
),

promotions as (
    select * from {{ ref('stg_ml__model_promotions') }}
),

cycle as (
    select
        {%- if cycle_hour_sql %}
        {{ cycle_hour_sql }} as cycle_hour
        {%- else %}
        (select max(hour) from candles) + interval 1 hour as cycle_hour
        {%- endif %}
),

-- the newest stored candle of each product before the cycle's hour (a re-run of an old hour sees what it saw)
raw_hours as (
    select
        candles.product_id,
        max(candles.hour) as newest_raw_hour
    from candles
    cross join cycle
    where candles.hour < cycle.cycle_hour
    group by candles.product_id
),

first_outcomes as (
    select
        outcomes.product_id,
        min(outcomes.target_hour) as first_target_hour
    from outcomes
    cross join cycle
    where outcomes.target_hour <= cycle.cycle_hour
    group by outcomes.product_id
),

-- what was served for each target hour of the trailing week, as it was at cycle time (a fallback a later
-- re-run replaced with the model's forecast still counts as a fallback)
served as (
    select
        outcomes.product_id,
        outcomes.target_hour,
        coalesce(outcomes.replaced_outcome, outcomes.outcome) as served_outcome,
        outcomes.outcome,
        outcomes.model_version,
        outcomes.is_realized,
        outcomes.abs_error,
        abs(outcomes.base_close - outcomes.realized_close) as persistence_abs_error,
        case
            when outcomes.realized_close is null or outcomes.lower_80 is null then null
            when outcomes.realized_close between outcomes.lower_80 and outcomes.upper_80 then 1
            else 0
        end as is_inside_interval,
        case when outcomes.target_hour > cycle.cycle_hour - interval 24 hour then 1 else 0 end as is_in_24h,
        cycle.cycle_hour
    from outcomes
    cross join cycle
    where outcomes.target_hour <= cycle.cycle_hour
      and outcomes.target_hour > cycle.cycle_hour - interval 168 hour
),

availability as (
    select
        product_id,
        sum(case when is_in_24h = 1 and served_outcome in ('model', 'fallback') then 1 else 0 end) as available_24h,
        sum(case when is_in_24h = 1 and served_outcome = 'fallback' then 1 else 0 end) as fallbacks_24h,
        sum(case when served_outcome in ('model', 'fallback') then 1 else 0 end) as available_168h,
        sum(case when served_outcome = 'fallback' then 1 else 0 end) as fallbacks_168h
    from served
    group by product_id
),

production as (
    select
        product_id,
        model_version,
        model_kind
    from registry
    where status = 'production'
),

-- the promotion that made the production model production; its holdout window's end is when, in data time
latest_promotion as (
    select
        promotions.product_id,
        promotions.window_end,
        promotions.promoted_at,
        row_number() over (
            partition by promotions.product_id
            order by promotions.promotion_id desc
        ) as recency
    from promotions
    inner join production
        on production.product_id = promotions.product_id
        and production.model_version = promotions.to_version
),

-- the production model's own realized forecasts of the trailing week (target hours closed by cycle time)
production_record as (
    select
        served.product_id,
        count(*) as realized_168h,
        avg(served.abs_error) as mae_168h,
        avg(served.persistence_abs_error) as persistence_mae_168h,
        avg(served.is_inside_interval) as coverage_80_168h
    from served
    inner join production
        on production.product_id = served.product_id
        and production.model_version = served.model_version
    where served.outcome = 'model'
      and served.is_realized = 1
      and served.target_hour < served.cycle_hour
    group by served.product_id
),

measured as (
    select
        raw_hours.product_id,
        cycle.cycle_hour,
        raw_hours.newest_raw_hour,
        timestampdiff(hour, raw_hours.newest_raw_hour, cycle.cycle_hour - interval 1 hour) as raw_lag_hours,
        -- hours the product should have an outcome for: since its first one, at most the window
        case
            when first_outcomes.first_target_hour is null then 0
            else timestampdiff(hour, greatest(first_outcomes.first_target_hour, cycle.cycle_hour - interval 23 hour),
                               cycle.cycle_hour) + 1
        end as expected_24h,
        case
            when first_outcomes.first_target_hour is null then 0
            else timestampdiff(hour, greatest(first_outcomes.first_target_hour, cycle.cycle_hour - interval 167 hour),
                               cycle.cycle_hour) + 1
        end as expected_168h,
        coalesce(availability.available_24h, 0) as available_24h,
        coalesce(availability.fallbacks_24h, 0) as fallbacks_24h,
        coalesce(availability.available_168h, 0) as available_168h,
        coalesce(availability.fallbacks_168h, 0) as fallbacks_168h,
        production.model_version as production_model_version,
        production.model_kind as production_model_kind,
        case
            when production.model_kind is null then null
            when production.model_kind in ('naive_persistence', 'naive_drift') then 1
            else 0
        end as is_production_baseline,
        latest_promotion.window_end as last_promotion_hour,
        latest_promotion.promoted_at as last_promoted_at,
        timestampdiff(hour, latest_promotion.window_end, cycle.cycle_hour) as hours_since_promotion,
        coalesce(production_record.realized_168h, 0) as realized_168h,
        production_record.mae_168h,
        production_record.persistence_mae_168h,
        cast(1 - production_record.mae_168h / nullif(production_record.persistence_mae_168h, 0) as double)
            as skill_168h,
        cast(production_record.coverage_80_168h as double) as coverage_80_168h
    from raw_hours
    cross join cycle
    left join first_outcomes
        on first_outcomes.product_id = raw_hours.product_id
    left join availability
        on availability.product_id = raw_hours.product_id
    left join production
        on production.product_id = raw_hours.product_id
    left join latest_promotion
        on latest_promotion.product_id = raw_hours.product_id
        and latest_promotion.recency = 1
    left join production_record
        on production_record.product_id = raw_hours.product_id
),

rated as (
    select
        measured.*,
        cast(available_24h / nullif(expected_24h, 0) as double) as availability_24h,
        cast(available_168h / nullif(expected_168h, 0) as double) as availability_168h,
        -- each check as the tests of _health__models.yml judge it, with the same vars
        case when raw_lag_hours > {{ var('health_max_raw_lag_hours') }} then 1 else 0 end as is_raw_stale,
        case
            when realized_168h >= {{ var('health_min_realized_hours') }}
                and skill_168h < {{ var('health_min_skill_168h') }} then 1
            else 0
        end as is_skill_failing,
        case
            when realized_168h >= {{ var('health_min_realized_hours') }}
                and (coverage_80_168h < {{ var('health_coverage_80_168h')[0] }}
                    or coverage_80_168h > {{ var('health_coverage_80_168h')[1] }}) then 1
            else 0
        end as is_coverage_off,
        case
            when available_24h < expected_24h * {{ var('health_min_availability_24h') }} then 1
            else 0
        end as is_availability_low
    from measured
),

final as (
    select
        product_id,
        cycle_hour,
        newest_raw_hour,
        raw_lag_hours,
        expected_24h,
        available_24h,
        fallbacks_24h,
        availability_24h,
        expected_168h,
        available_168h,
        fallbacks_168h,
        availability_168h,
        production_model_version,
        production_model_kind,
        is_production_baseline,
        last_promotion_hour,
        last_promoted_at,
        hours_since_promotion,
        realized_168h,
        mae_168h,
        persistence_mae_168h,
        skill_168h,
        coverage_80_168h,
        case
            when is_raw_stale = 1 or is_skill_failing = 1 then 'error'
            when is_coverage_off = 1 or is_availability_low = 1 then 'warn'
            else 'ok'
        end as status,
        nullif(concat_ws(', ',
            if(is_raw_stale = 1, 'raw_lag_hours', null),
            if(is_skill_failing = 1, 'skill_168h', null),
            if(is_coverage_off = 1, 'coverage_80_168h', null),
            if(is_availability_low = 1, 'availability_24h', null)
        ), '') as failing_checks
    from rated
)

select * from final
