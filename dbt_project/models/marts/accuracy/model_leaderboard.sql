{{
    config(
        materialized='table',
        tags=['accuracy'],
        post_hook="{{ ensure_keys(primary_key=['product_id', 'model_version']) }}",
    )
}}
-- One row per product and model that has at least one realized prediction: MAE over the trailing 24 h and
-- 168 h of realized target hours (ending at the product's newest realized hour, `as_of_hour`), the MAE
-- persistence made on exactly the same hours, and the skill 1 − MAE / MAE_persistence (> 0 beats it).

with accuracy as (
    select * from {{ ref('fct_prediction_accuracy') }}
    where is_realized = 1
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

as_of as (
    select
        product_id,
        max(target_hour) as as_of_hour
    from accuracy
    group by product_id
),

windowed as (
    select
        accuracy.product_id,
        accuracy.model_version,
        as_of.as_of_hour,
        count(*) as n_realized,
        min(accuracy.target_hour) as first_target_hour,
        max(accuracy.target_hour) as last_target_hour,
        sum(case when accuracy.target_hour > as_of.as_of_hour - interval 24 hour then 1 else 0 end) as n_24h,
        avg(case when accuracy.target_hour > as_of.as_of_hour - interval 24 hour then accuracy.abs_error end) as mae_24h,
        avg(case when accuracy.target_hour > as_of.as_of_hour - interval 24 hour
            then accuracy.persistence_abs_error end) as persistence_mae_24h,
        sum(case when accuracy.target_hour > as_of.as_of_hour - interval 168 hour then 1 else 0 end) as n_168h,
        avg(case when accuracy.target_hour > as_of.as_of_hour - interval 168 hour then accuracy.abs_error end) as mae_168h,
        avg(case when accuracy.target_hour > as_of.as_of_hour - interval 168 hour
            then accuracy.persistence_abs_error end) as persistence_mae_168h,
        avg(case when accuracy.target_hour > as_of.as_of_hour - interval 168 hour
            then accuracy.is_inside_interval end) as coverage_80_168h,
        avg(accuracy.abs_error) as mae_all,
        avg(accuracy.persistence_abs_error) as persistence_mae_all
    from accuracy
    inner join as_of
        on as_of.product_id = accuracy.product_id
    group by
        accuracy.product_id,
        accuracy.model_version,
        as_of.as_of_hour
),

final as (
    select
        windowed.product_id,
        windowed.model_version,
        registry.model_kind,
        registry.status,
        promotions.last_promoted_at,
        windowed.as_of_hour,
        windowed.first_target_hour,
        windowed.last_target_hour,
        windowed.n_realized,
        windowed.n_24h,
        windowed.mae_24h,
        windowed.persistence_mae_24h,
        cast(1 - windowed.mae_24h / nullif(windowed.persistence_mae_24h, 0) as double) as skill_24h,
        windowed.n_168h,
        windowed.mae_168h,
        windowed.persistence_mae_168h,
        cast(1 - windowed.mae_168h / nullif(windowed.persistence_mae_168h, 0) as double) as skill_168h,
        cast(windowed.coverage_80_168h as double) as coverage_80_168h,
        windowed.mae_all,
        windowed.persistence_mae_all,
        cast(1 - windowed.mae_all / nullif(windowed.persistence_mae_all, 0) as double) as skill_all,
        rank() over (
            partition by windowed.product_id
            order by coalesce(windowed.mae_168h, 1e300)
        ) as rank_168h
    from windowed
    left join registry
        on registry.model_version = windowed.model_version
    left join promotions
        on promotions.to_version = windowed.model_version
)

select * from final
