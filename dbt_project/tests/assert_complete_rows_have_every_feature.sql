-- A row flagged is_complete has every feature (the volume z-scores aside, which are NULL by definition
-- over a flat window). This is what the ML steps rely on when they train and predict on complete rows.

{%- set nullable_when_complete = [
    'volume_zscore_24h', 'volume_zscore_168h', 'close_position_in_range', 'target_close_1h', 'target_log_return_1h'
] %}

with features as (
    select * from {{ get_where_subquery(ref('fct_candle_features')) }}
)

select
    product_id,
    hour
from features
where is_complete = 1
    and (
        1 = 0
        {%- set documented = graph.nodes.get('model.candlecast.fct_candle_features', {}).get('columns', {}) if execute else {} %}
        {%- for column in documented if column not in nullable_when_complete %}
        or {{ column }} is null
        {%- endfor %}
    )
