{#-
  dbt-mysql creates tables with no key, no index and nullable columns. This post_hook adds the primary
  key and secondary indexes a table is missing, in one ALTER, and does nothing when they are all there:
  post_hooks run on every build, and an incremental run must not fail re-adding a key that exists.
  Adding the primary key also makes its columns NOT NULL.

    post_hook="{{ ensure_keys(primary_key=['product_id', 'hour'], indexes={'ix_x_hour': ['hour']}) }}"
-#}
{% macro ensure_keys(primary_key=none, indexes={}) -%}
    {%- if execute -%}
        {%- set query -%}
            select distinct index_name
            from information_schema.statistics
            where table_schema = {{ sql_string(this.schema) }}
              and table_name = {{ sql_string(this.identifier) }}
        {%- endset -%}
        {%- set existing = run_query(query).columns[0].values() | map('lower') | list -%}
        {%- set clauses = [] -%}
        {%- if primary_key and 'primary' not in existing -%}
            {%- do clauses.append('add primary key (' ~ primary_key | join(', ') ~ ')') -%}
        {%- endif -%}
        {%- for name, columns in indexes.items() -%}
            {%- if name | lower not in existing -%}
                {%- do clauses.append('add index ' ~ name ~ ' (' ~ columns | join(', ') ~ ')') -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if clauses -%}
            alter table {{ this }} {{ clauses | join(', ') }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
