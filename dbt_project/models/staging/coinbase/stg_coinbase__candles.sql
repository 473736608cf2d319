-- One row per product-hour, typed and renamed; nothing else. The raw table's primary key
-- (product_id, bucket_start) already makes rows unique, so no dedupe is needed, and keeping this a plain
-- projection lets MariaDB merge the view into its callers and use that key for their hour-range filters
-- (the incremental models depend on it).
with source as (
    select * from {{ source('coinbase', 'candles') }}
),

renamed as (
    select
        product_id,
        bucket_start as hour,
        open,
        high,
        low,
        close,
        volume,
        ingested_at
    from source
)

select * from renamed
