{#-
  A health check of product_health: one failing row per product whose `column_name` lies outside
  [min_value, max_value], naming the product, the check, the value and the bound, so the hourly health step
  can say exactly what failed where (it runs this test's compiled SQL again to read them). NULL never fails:
  a metric with nothing to measure yet is not judged (the `where` config narrows further, e.g. to products
  with enough realized forecasts).
-#}
{% test health_threshold(model, column_name, min_value=none, max_value=none) %}
    select
        product_id,
        '{{ column_name }}' as health_check,
        cast({{ column_name }} as double) as observed,
        concat(
            '{{ column_name }} = ', cast(round({{ column_name }}, 4) as char),
            case
                {%- if min_value is not none %}
                when {{ column_name }} < {{ min_value }} then ' below the minimum {{ min_value }}'
                {%- endif %}
                {%- if max_value is not none %}
                when {{ column_name }} > {{ max_value }} then ' above the maximum {{ max_value }}'
                {%- endif %}
                else ''
            end
        ) as violation
    from {{ model }}
    where {{ column_name }} is not null
      and (
        1 = 0
        {%- if min_value is not none %}
        or {{ column_name }} < {{ min_value }}
        {%- endif %}
        {%- if max_value is not none %}
        or {{ column_name }} > {{ max_value }}
        {%- endif %}
      )
{% endtest %}
