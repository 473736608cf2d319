{#-
  Source freshness compares max(loaded_at_field) with "now" from the database. The extractor writes
  `ingested_at` in UTC, but dbt's default takes current_timestamp(), which is in the session's time zone:
  on a server not set to UTC, freshness would be off by the offset. Overrides dbt's `collect_freshness`
  (the root project's macro wins) to take UTC_TIMESTAMP() instead.
-#}
{% macro collect_freshness(source, loaded_at_field, filter) %}
    {% call statement('collect_freshness', fetch_result=True, auto_begin=False) -%}
        select
            max({{ loaded_at_field }}) as max_loaded_at,
            utc_timestamp(6) as snapshotted_at
        from {{ source }}
        {% if filter %}
        where {{ filter }}
        {% endif %}
    {%- endcall %}
    {{ return(load_result('collect_freshness')) }}
{% endmacro %}
