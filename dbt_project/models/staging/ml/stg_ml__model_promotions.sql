{{ config(materialized='ephemeral', tags=['accuracy']) }}
-- Every production switch, without the metrics JSON blob.
with source as (
    {{ select_from_optional_source('ml', 'model_promotions',
        "cast(null as signed) as promotion_id, cast(null as char(32)) as product_id,
         cast(null as char(128)) as from_version, cast(null as char(128)) as to_version,
         cast(null as datetime) as window_start, cast(null as datetime) as window_end,
         cast(null as char(1024)) as reason, cast(null as char(16)) as evidence,
         cast(null as datetime(6)) as promoted_at") }}
),

renamed as (
    select
        promotion_id,
        product_id,
        from_version,
        to_version,
        window_start,
        window_end,
        reason,
        evidence,
        promoted_at
    from source
)

select * from renamed
