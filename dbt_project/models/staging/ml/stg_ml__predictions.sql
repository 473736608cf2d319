{{ config(materialized='ephemeral', tags=['accuracy']) }}
-- The ML layer's hourly forecasts (production and shadow), typed; nothing else. Ephemeral, so that each build re-checks whether the
-- source exists yet (see select_from_optional_source).
with source as (
    {{ select_from_optional_source('ml', 'predictions',
        "cast(null as char(32)) as product_id, cast(null as datetime) as target_hour,
         cast(null as char(128)) as model_version, cast(null as char(16)) as role,
         cast(null as decimal(30,12)) as predicted_close,
         cast(null as decimal(30,12)) as lower_80, cast(null as decimal(30,12)) as upper_80,
         cast(null as datetime) as feature_hour, cast(null as datetime(6)) as created_at,
         cast(null as datetime(6)) as updated_at") }}
),

renamed as (
    select
        product_id,
        target_hour,
        model_version,
        role,
        predicted_close,
        lower_80,
        upper_80,
        feature_hour,
        created_at,
        updated_at
    from source
)

select * from renamed
