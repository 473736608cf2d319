{#- Fails for every combination of `columns` that occurs more than once (a composite `unique`). -#}
{% test unique_key(model, columns) %}
    select
        {{ columns | join(', ') }},
        count(*) as occurrences
    from {{ model }}
    group by {{ columns | join(', ') }}
    having count(*) > 1
{% endtest %}
