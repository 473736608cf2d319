{#-
  Rows n = 0..max_offset, for building hourly spines. A cross join of digit tables rather than a recursive
  CTE: MariaDB stops a recursive CTE at max_recursive_iterations (default 1000) and 10 years are 87,600
  hours. Only as many digits as max_offset needs are generated.
-#}
{% macro hour_offsets(max_offset) -%}
    {%- set digits = (max_offset | string) | length -%}
    select n
    from (
        select
            {% for i in range(digits) -%}
            d{{ i }}.d * {{ 10 ** i }}{{ " + " if not loop.last }}
            {%- endfor %} as n
        from
            {% for i in range(digits) -%}
            (select 0 as d union all select 1 union all select 2 union all select 3 union all select 4
             union all select 5 union all select 6 union all select 7 union all select 8 union all select 9) as d{{ i }}
            {{- " cross join" if not loop.last }}
            {% endfor %}
    ) as offsets
    where n <= {{ max_offset }}
{%- endmacro %}

{#- The longest first-to-last span in hours of any product in `relation` (rows matching `filter`). -#}
{% macro max_hours_span(relation, filter='1 = 1') -%}
    {%- if not execute -%}{{ return(0) }}{%- endif -%}
    {%- set query -%}
        select coalesce(max(timestampdiff(hour, first_hour, last_hour)), 0)
        from (
            select product_id, min(hour) as first_hour, max(hour) as last_hour
            from {{ relation }}
            where {{ filter }}
            group by product_id
        ) as spans
    {%- endset -%}
    {{ return(run_query(query).columns[0].values()[0] | int) }}
{%- endmacro %}
