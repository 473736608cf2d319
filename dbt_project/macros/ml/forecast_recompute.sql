{#-
  Which forecasts an incremental run of an accuracy mart re-scores, so its hourly cost stays flat in history.

  A scored forecast changes when (a) the forecast itself is written or rewritten (a new hour, a shadow model's
  first forecast, a healed fallback, a re-run after a promotion): its `updated_at` moves; or (b) the realized
  close of its target hour arrives or is corrected. (b) happens where the feature mart recomputes, the newest
  `recompute_hours` of each product (dbt_project.yml; older corrections need a full refresh of the feature mart
  and these marts alike, see the README).

  forecast_recompute_bounds() reads `this` once and returns
    {'ranges': [{'product_id': ..., 'recompute_from': 'YYYY-MM-DD HH:MM:SS'}, ...],   -- (b), per product
     'changed_since': 'YYYY-MM-DD HH:MM:SS.ffffff' or none}                              -- (a)
  `changed_since` is an hour before the newest `updated_at` already scored: a margin for writes that committed
  after the last run read the source. The bounds become literals in the model's SQL, so MariaDB reads the source
  through its primary key (product_id, target_hour, ...) and its updated_at index, never a whole table.
-#}
{% macro forecast_recompute_bounds(hour_column='target_hour', updated_column='updated_at',
                                   lookback_hours=var('recompute_hours')) -%}
    {%- if not execute or not is_incremental() -%}{{ return({'ranges': [], 'changed_since': none}) }}{%- endif -%}
    {%- set query -%}
        select
            product_id,
            max({{ hour_column }}) - interval {{ lookback_hours }} hour as recompute_from
        from {{ this }}
        group by product_id
    {%- endset -%}
    {%- set ranges = [] -%}
    {%- for row in run_query(query).rows if row[1] is not none -%}
        {%- do ranges.append({'product_id': row[0], 'recompute_from': row[1].strftime('%Y-%m-%d %H:%M:%S')}) -%}
    {%- endfor -%}
    {%- set newest = run_query('select max(' ~ updated_column ~ ') - interval 1 hour from ' ~ this).rows[0][0] -%}
    {{ return({'ranges': ranges,
               'changed_since': newest.strftime('%Y-%m-%d %H:%M:%S.%f') if newest is not none else none}) }}
{%- endmacro %}

{#-
  `select * from <relation>` limited to what forecast_recompute_bounds() says to re-score: the recent hours of
  every product (every hour of a product `this` does not hold yet), union the rows written since
  `changed_since`. Two selects rather than one OR, so each reads through its own index. The whole relation on
  a full build.
-#}
{% macro select_forecasts_to_score(relation, bounds, hour_column='target_hour', updated_column='updated_at') -%}
    select * from {{ relation }}
    where {{ recompute_filter(bounds.ranges, hour_column=hour_column) }}
    {%- if bounds.changed_since is not none %}
    union
    select * from {{ relation }}
    where {{ updated_column }} >= timestamp {{ sql_string(bounds.changed_since) }}
    {%- endif %}
{%- endmacro %}
