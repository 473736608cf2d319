{{ config(materialized='ephemeral', tags=['accuracy']) }}
-- The model registry without the metadata JSON blob; `kind` renamed to say what it is.
with source as (
    {{ select_from_optional_source('ml', 'model_registry',
        "cast(null as char(128)) as model_version, cast(null as char(32)) as product_id,
         cast(null as char(32)) as kind, cast(null as char(16)) as status,
         cast(null as datetime) as training_cutoff, cast(null as datetime) as trained_at,
         cast(null as char(64)) as feature_hash, cast(null as signed) as train_rows,
         cast(null as datetime(6)) as registered_at, cast(null as datetime(6)) as status_changed_at") }}
),

renamed as (
    select
        model_version,
        product_id,
        kind as model_kind,
        status,
        training_cutoff,
        trained_at,
        feature_hash,
        train_rows,
        registered_at,
        status_changed_at
    from source
)

select * from renamed
