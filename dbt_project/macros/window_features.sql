{#-
  The window patterns the feature mart repeats. Every window is a named window `w`
  (`window w as (partition by product_id order by hour)`) over a *complete* hourly spine, so N rows back is
  exactly N hours back, and every frame ends at the current row: nothing after a row's own hour is read.
-#}

{#- ln(price_t / price_{t-hours}): the log return over `hours` hours. -#}
{% macro log_return(price, hours, window='w') -%}
    ln({{ price }} / lag({{ price }}, {{ hours }}) over {{ window }})
{%- endmacro %}

{#- `column` lagged by each of `lags` rows, as columns named {column}_lag_{k}. -#}
{% macro lag_columns(column, lags, window='w') -%}
    {%- for k in lags %}
        lag({{ column }}, {{ k }}) over {{ window }} as {{ column }}_lag_{{ k }}{{ "," if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#- Sum of `expr` over the `rows` rows ending at the current one (inclusive). -#}
{% macro rolling_sum(expr, rows, window='w') -%}
    sum({{ expr }}) over ({{ window }} rows between {{ rows - 1 }} preceding and current row)
{%- endmacro %}

{#-
  Running sums for a rolling mean/std, as columns {name}_sum_{rows} and {name}_sumsq_{rows}.
  `expr` must be DECIMAL: MariaDB slides a window by adding the new row and subtracting the leaving one,
  which on DOUBLE accumulates rounding that depends on where the partition started, so an incremental
  run (which starts its partitions a few days back) would differ from a full refresh in the last bits.
  Decimal sums are exact, which makes both paths agree value for value.
-#}
{% macro rolling_sums(expr, name, rows, window='w') -%}
        {{ rolling_sum(expr, rows, window) }} as {{ name }}_sum_{{ rows }},
        {{ rolling_sum('(' ~ expr ~ ') * (' ~ expr ~ ')', rows, window) }} as {{ name }}_sumsq_{{ rows }}
{%- endmacro %}

{#- Mean over `rows` rows from the sums above. -#}
{% macro rolling_mean(name, rows) -%}
    {{ name }}_sum_{{ rows }} / {{ rows }}
{%- endmacro %}

{#- Sample standard deviation over `rows` rows from the sums above (exact up to the final sqrt). -#}
{% macro rolling_stddev(name, rows) -%}
    sqrt(greatest(
        ({{ name }}_sumsq_{{ rows }} - {{ name }}_sum_{{ rows }} * {{ name }}_sum_{{ rows }} / {{ rows }}) / {{ rows - 1 }},
        0
    ))
{%- endmacro %}

{#- `expr` where the row has at least `hours` hours of history before it, else NULL (no partial windows). -#}
{% macro with_history(hours, expr) -%}
    case when hours_since_first_candle >= {{ hours }} then {{ expr }} end
{%- endmacro %}

{#- `expr` where `missing_count` (missing hours among what `expr` reads) is 0, else NULL: a filled-in hour is
    never read as an observation. -#}
{% macro gap_free(missing_count, expr) -%}
    case when {{ missing_count }} = 0 then {{ expr }} end
{%- endmacro %}
