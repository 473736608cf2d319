{#-
  MariaDB's split-materialized plan ("LATERAL DERIVED") computes a grouped derived table once per row of the
  table it is joined to, and picks it on size estimates that are far off for small, freshly rebuilt tables: on
  1,500 realized forecasts of 250 products `model_leaderboard` took 1.75 s and `assert_leaderboard_matches_accuracy`
  15.1 s with it, 0.04 s and 0.08 s without it (bench/bench_scale.py), and both grew with every hour's forecasts.
  These queries join small grouped tables by their keys, where a plain materialization is always cheap, so it is
  switched off: for a model by a pre_hook (and back on by its post_hook), for every data test here.
-#}
{% macro without_lateral_derived() -%}
    set session optimizer_switch = 'split_materialized=off'
{%- endmacro %}

{#- the session's default back, for the next model dbt runs on the same connection -#}
{% macro with_lateral_derived() -%}
    set session optimizer_switch = 'split_materialized=default'
{%- endmacro %}


{#- dbt-mysql's test query for the mariadb adapter, as one statement with the plan switch above (SET STATEMENT ...
    FOR: it lasts for this statement only, on whatever session dbt runs the test). -#}
{% macro mariadb__get_test_sql(main_sql, fail_calc, warn_if, error_if, limit) -%}
    set statement optimizer_switch = 'split_materialized=off' for
    select
      {{ fail_calc }} as failures,
      case
        when {{ fail_calc }} {{ warn_if | replace("!=","<>") }} then 'true'
        else 'false'
      end as should_warn,
      case
        when {{ fail_calc }} {{ error_if | replace("!=","<>") }} then 'true'
        else 'false'
      end as should_error
    from (
      {{ main_sql }}
      {{ "limit " ~ limit if limit != none }}
    ) dbt_internal_test
{%- endmacro %}
