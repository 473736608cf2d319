{#-
  `select * from` a source that another stage creates, or a typed empty result while it does not exist yet.

  The ML tables (`{base}_ml.predictions`, `model_registry`, `model_promotions`) are created by the `ml` role on
  its first run, after the first `dbt build` of a fresh database. Selecting from them through this macro keeps
  that first build green (the accuracy marts are built empty) instead of failing on a missing table. The check
  runs at execution time, so the models using it are ephemeral: every build re-resolves it.

    {{ select_from_optional_source('ml', 'predictions', "cast(null as char(32)) as product_id, ...") }}
-#}
{% macro select_from_optional_source(source_name, table_name, empty_columns) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- set found = relation -%}
    {%- if execute -%}
        {%- set found = adapter.get_relation(database=none, schema=relation.schema, identifier=relation.identifier) -%}
    {%- endif -%}
    {%- if found is none -%}
        select {{ empty_columns }} from dual where 1 = 0
    {%- else -%}
        select * from {{ relation }}
    {%- endif -%}
{%- endmacro %}
