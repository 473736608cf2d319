{#-
  What the data tests of the big hourly tables read. With `tests_scope: recent` (the hourly builds: the cycle's and
  the hourly DAG's features and accuracy steps) the tests of the tables in `recent_test_tables` (each named with
  its hour column) read the hours an incremental run rewrites: `recompute_hours` + 24 back from the table's newest
  hour. Older rows do not change between two hourly runs (but for forecasts backfilled or healed further back,
  which the accuracy marts re-score too), and the weekly build (`tests_scope: all`, the default) still tests every
  row. Without this every hourly build scanned the whole history once per test, about 30 times for the feature
  mart and 25 for the accuracy marts (whose rows grow with products x models x hours): the cost grew with every
  hour stored.
-#}
{% macro recent_rows_condition(relation) -%}
    {%- set scope = var('tests_scope', 'all') -%}
    {%- if scope not in ('all', 'recent') -%}
        {{ exceptions.raise_compiler_error("var tests_scope must be 'all' or 'recent', not " ~ scope) }}
    {%- endif -%}
    {%- set column = var('recent_test_tables').get(relation.identifier) -%}
    {%- if scope == 'recent' and column -%}
        {{ column }} > (select max({{ column }}) from {{ relation }}) - interval {{ var('recompute_hours') + 24 }} hour
    {%- endif -%}
{%- endmacro %}


{#- dbt's generic tests read their model through this (dbt's own adds the test's `where` config); singular tests
    call it on their ref() to get the same rows. -#}
{% macro mariadb__get_where_subquery(relation) -%}
    {%- set conditions = [] -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}
        {%- do conditions.append(where) -%}
    {%- endif -%}
    {%- set recent = recent_rows_condition(relation) -%}
    {%- if recent -%}
        {%- do conditions.append(recent) -%}
    {%- endif -%}
    {%- if conditions -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ conditions | join(' and ') ~ ') dbt_subquery') -%}
    {%- endif -%}
    {%- do return(relation) -%}
{%- endmacro %}
