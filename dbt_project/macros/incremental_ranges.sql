{#-
  Which rows an incremental run of a per-product hourly model recomputes.

  For every product already in `this`, the run recomputes the hours from its newest hour minus
  `lookback_hours` on. A new product, or one whose history was extended backwards (a backfill of older
  hours, detected by its first hour in `upstream` being earlier than in `this`), is recomputed whole.
  When `align_to_upstream_row` is true the start is moved back to the product's newest row in `upstream`
  at or before it, so a spine that starts its range there always begins on a real candle.

  The bounds are read here, at run time, and written into the model's SQL as literals, so MariaDB filters
  upstream tables by their (product_id, hour) primary key: the hourly cost stays independent of history.

  Returns a list of {'product_id': ..., 'recompute_from': 'YYYY-MM-DD HH:MM:SS'}.
-#}
{% macro recompute_ranges(upstream, lookback_hours, align_to_upstream_row=false) -%}
    {%- if not execute -%}{{ return([]) }}{%- endif -%}
    {%- set query -%}
        select
            existing.product_id,
            existing.last_hour - interval {{ lookback_hours }} hour as recompute_from
        from (
            select product_id, min(hour) as first_hour, max(hour) as last_hour
            from {{ this }}
            group by product_id
        ) as existing
        inner join (
            select product_id, min(hour) as first_hour
            from {{ upstream }}
            group by product_id
        ) as upstream_bounds
            on upstream_bounds.product_id = existing.product_id
        -- history extended backwards: recompute the product whole
        where upstream_bounds.first_hour >= existing.first_hour
    {%- endset -%}
    {%- set rows = run_query(query).rows -%}
    {%- if align_to_upstream_row and rows | length > 0 -%}
        {#- one literal lookup per product: MariaDB answers each from the primary key alone, where a
            correlated subquery would scan the product's whole history #}
        {%- set query -%}
            {%- for row in rows %}
            select
                {{ sql_string(row[0]) }} as product_id,
                (
                    select max(hour)
                    from {{ upstream }}
                    where product_id = {{ sql_string(row[0]) }}
                      and hour <= timestamp {{ sql_string(row[1].strftime('%Y-%m-%d %H:%M:%S')) }}
                ) as recompute_from
            {{ "union all" if not loop.last }}
            {%- endfor %}
        {%- endset -%}
        {%- set rows = run_query(query).rows -%}
    {%- endif -%}
    {%- set ranges = [] -%}
    {%- for row in rows -%}
        {%- if row[1] is not none -%}
            {%- do ranges.append({'product_id': row[0], 'recompute_from': row[1].strftime('%Y-%m-%d %H:%M:%S')}) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(ranges) }}
{%- endmacro %}

{#-
  A WHERE condition keeping each listed product's hours from its recompute_from minus `back_hours`
  on, and every hour of products not listed (new or recomputed whole).

  Products that share a recompute_from (all of them, when every product is up to date) share one branch,
  `hour >= <bound> and product_id in (...)`: one OR branch per distinct bound, not one per product, so the
  condition MariaDB analyses into primary-key ranges stays small with hundreds of products.
-#}
{% macro recompute_filter(ranges, back_hours=0, product_column='product_id', hour_column='hour') -%}
    {%- if ranges | length == 0 -%}
    1 = 1
    {%- else -%}
    {%- set by_bound = {} -%}
    {%- for r in ranges -%}
        {%- if r.recompute_from not in by_bound -%}{%- do by_bound.update({r.recompute_from: []}) -%}{%- endif -%}
        {%- do by_bound[r.recompute_from].append(r.product_id) -%}
    {%- endfor %}
    (
        {%- for bound in by_bound | sort %}
        ({{ hour_column }} >= timestamp {{ sql_string(bound) }} - interval {{ back_hours }} hour
            and {{ product_column }} in ({{ sql_list(by_bound[bound]) }}))
        or
        {%- endfor %}
        {{ product_column }} not in ({{ sql_list(ranges | map(attribute='product_id') | list) }})
    )
    {%- endif -%}
{%- endmacro %}

{% macro sql_list(values) -%}
    {%- for value in values %}{{ sql_string(value) }}{{ ", " if not loop.last }}{% endfor -%}
{%- endmacro %}

{% macro sql_string(value) -%}
    '{{ value | string | replace("\\", "\\\\") | replace("'", "''") }}'
{%- endmacro %}
