-- Every hourly outcome says what it is: a model outcome names its model and is exactly that model's row in
-- predictions (what fct_prediction_accuracy scores), the one with role 'production' (served); a fallback has a price, a base hour, a reason and no
-- model or interval; "none" has a reason and no price. Returns one row per violation.
with outcomes as (
    select * from {{ get_where_subquery(ref('fct_forecast_outcomes')) }}  -- the recent hours in the hourly builds
),

predictions as (
    select * from {{ ref('stg_ml__predictions') }}
),

final as (
    select
        outcomes.product_id,
        outcomes.target_hour,
        outcomes.outcome
    from outcomes
    left join predictions
        on predictions.product_id = outcomes.product_id
        and predictions.target_hour = outcomes.target_hour
        and predictions.model_version = outcomes.model_version
    where (outcomes.outcome = 'model' and (
            predictions.product_id is null
            or predictions.role <> 'production'
            or predictions.predicted_close <> outcomes.predicted_close
            or outcomes.reason is not null
        ))
        or (outcomes.outcome = 'fallback' and (
            outcomes.model_version is not null
            or outcomes.predicted_close is null
            or outcomes.lower_80 is not null
            or outcomes.base_hour is null
            or outcomes.reason is null
        ))
        or (outcomes.outcome = 'none' and (outcomes.predicted_close is not null or outcomes.reason is null))
)

select * from final
