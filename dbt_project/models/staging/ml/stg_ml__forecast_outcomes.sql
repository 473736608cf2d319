{{ config(materialized='ephemeral', tags=['accuracy']) }}
-- What the hourly step served for each target hour (model forecast, labelled fallback, or none), typed;
-- nothing else. Ephemeral for the same reason as the other ML staging models (see select_from_optional_source).
with source as (
    {{ select_from_optional_source('ml', 'forecast_outcomes',
        "cast(null as char(32)) as product_id, cast(null as datetime) as target_hour,
         cast(null as datetime) as feature_hour, cast(null as char(16)) as outcome,
         cast(null as char(128)) as model_version, cast(null as decimal(30,12)) as predicted_close,
         cast(null as decimal(30,12)) as lower_80, cast(null as decimal(30,12)) as upper_80,
         cast(null as datetime) as base_hour, cast(null as char(32)) as reason_code,
         cast(null as char(1024)) as reason, cast(null as char(16)) as replaced_outcome,
         cast(null as datetime(6)) as created_at, cast(null as datetime(6)) as updated_at") }}
),

renamed as (
    select
        product_id,
        target_hour,
        feature_hour,
        outcome,
        model_version,
        predicted_close,
        lower_80,
        upper_80,
        base_hour,
        reason_code,
        reason,
        replaced_outcome,
        created_at,
        updated_at
    from source
)

select * from renamed
