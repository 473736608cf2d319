{#-
  The oldest hour any product's 168 h leaderboard window reaches, read at run time from `monthly`
  (fct_model_accuracy_monthly: each product's last realized hour) and returned as a literal ('YYYY-MM-DD HH:MM:SS'),
  or none when there is nothing to bound (not executing, the table not built yet, no realized forecast). Written
  into a query as a literal, MariaDB reads fct_prediction_accuracy's trailing week through its target_hour index; a
  bound from a subquery is not folded into a range: it scanned the table. Read by model_leaderboard and by its check
  against the accuracy mart (tests/accuracy/assert_leaderboard_matches_accuracy.sql), which read the whole mart
  without it: 6.4 s an hour at 10 years of one product's ten models (bench/bench_dbt.py accuracy).
-#}
{% macro leaderboard_window_start(monthly) -%}
    {%- if not execute -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set relation = adapter.get_relation(database=none, schema=monthly.schema, identifier=monthly.identifier) -%}
    {%- if relation is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set bound -%}
        select min(as_of_hour) - interval 168 hour
        from (
            select max(last_realized_hour) as as_of_hour
            from {{ relation }}
            group by product_id
        ) as products
    {%- endset -%}
    {%- set found = run_query(bound).rows[0][0] -%}
    {{ return(found.strftime('%Y-%m-%d %H:%M:%S') if found is not none else none) }}
{%- endmacro %}
