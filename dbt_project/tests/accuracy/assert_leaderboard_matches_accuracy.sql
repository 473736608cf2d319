-- The leaderboard's 168 h MAE and skill recomputed from fct_prediction_accuracy, independently of the model.
with accuracy as (
    select * from {{ ref('fct_prediction_accuracy') }}
    where is_realized = 1
),

as_of as (
    select
        product_id,
        max(target_hour) as as_of_hour
    from accuracy
    group by product_id
),

expected as (
    select
        accuracy.product_id,
        accuracy.model_version,
        avg(accuracy.abs_error) as mae_168h,
        1 - avg(accuracy.abs_error) / avg(accuracy.persistence_abs_error) as skill_168h
    from accuracy
    inner join as_of
        on as_of.product_id = accuracy.product_id
    where accuracy.target_hour > as_of.as_of_hour - interval 168 hour
    group by
        accuracy.product_id,
        accuracy.model_version
)

select
    expected.*,
    leaderboard.mae_168h as leaderboard_mae_168h,
    leaderboard.skill_168h as leaderboard_skill_168h
from expected
left join {{ ref('model_leaderboard') }} as leaderboard
    on leaderboard.product_id = expected.product_id
    and leaderboard.model_version = expected.model_version
where leaderboard.model_version is null
    or abs(leaderboard.mae_168h - expected.mae_168h) > 1e-6
    or abs(coalesce(leaderboard.skill_168h, 0) - coalesce(expected.skill_168h, 0)) > 1e-9
