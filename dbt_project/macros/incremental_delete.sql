{#-
  Overrides dbt-mysql 1.7.0's `incremental_delete` (the root project's macro wins over the adapter's).
  The adapter deletes with `where (k1, k2) in (select k1, k2 from <tmp>)`, which MariaDB 10.11 runs as a
  scan of the whole target table, so every hourly run would cost more as history grows. A multi-table
  DELETE joined on the unique key looks each new row up through the target's primary key instead.
  Same contract as the original: delete the target rows whose unique key is in the temp relation.
-#}
{% macro incremental_delete(tmp_relation, target_relation, unique_key=none, statement_name="pre_main") %}
    {%- if unique_key is not none and unique_key | length -%}
    {%- set keys = [unique_key] if unique_key is string else unique_key -%}
    {#- no alias for the target: MariaDB resolves a multi-table DELETE's alias in the default database,
        and dbt's connection has none (error 1046) #}
    delete {{ target_relation }}
    from {{ target_relation }}
    inner join {{ tmp_relation }} as incoming
        on {% for key in keys -%}
        {{ target_relation }}.{{ key }} = incoming.{{ key }}{{ " and " if not loop.last }}
        {%- endfor %}
    {%- endif %}
{%- endmacro %}
