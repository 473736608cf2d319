{#-
  dbt-mysql's incremental materialization ignores `on_schema_change`: it inserts only the columns the
  existing table already has, so a column added to the model is silently dropped, and a removed one fails
  later with an obscure error. This pre_hook compares the existing table's columns with the model's query
  before an incremental run and fails loudly, naming the difference and the fix (a full refresh).

    pre_hook="{{ fail_on_column_drift() }}"
-#}
{% macro fail_on_column_drift() -%}
    {%- if execute and is_incremental() -%}
        {%- set existing = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
        {%- set wanted = get_columns_in_query(sql) | map('lower') | list -%}
        {%- set added = wanted | reject('in', existing) | list -%}
        {%- set removed = existing | reject('in', wanted) | list -%}
        {%- if added or removed -%}
            {{ exceptions.raise_compiler_error(
                "Columns of " ~ this ~ " differ from model " ~ model.name ~ " (new in the model: "
                ~ (added | join(', ') or 'none') ~ "; gone from the model: " ~ (removed | join(', ') or 'none')
                ~ "). An incremental run would silently drop or break them: rebuild it with "
                ~ "`dbt build --full-refresh --select " ~ model.name ~ "+`."
            ) }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
