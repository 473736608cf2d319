-- The leaderboard's trailing windows recomputed from fct_prediction_accuracy by another route than the model's:
-- a model is ranked in a window when no hour of the window that has a realized forecast lacks one of its own (an
-- anti-join over model × hour, where the model counts hours); its rank is one more than the number of ranked
-- models with a strictly lower MAE (a count, where the model uses rank()); MAE and skill over its forecasts
-- in the window, persistence's on the same hours. Returns one row per disagreement. Bounded to the trailing
-- 168 h, so its cost stays flat in history like the model's.

-- The accuracy mart is read from the start of the leaderboard's trailing week, a literal (macros/ml), as the model
-- reads it: bounded by the window join alone, this test read the whole mart.
-- depends_on: {{ ref('fct_model_accuracy_monthly') }}
{%- set window_start = leaderboard_window_start(ref('fct_model_accuracy_monthly')) %}

with accuracy as (
    select * from {{ ref('fct_prediction_accuracy') }}
    where is_realized = 1
    {%- if window_start is not none %}
        and target_hour > timestamp {{ sql_string(window_start) }}
    {%- endif %}
),

as_of as (
    select
        product_id,
        max(target_hour) as as_of_hour
    from accuracy
    group by product_id
),

windows as (
    select 24 as window_hours
    union all
    select 168
),

in_window as (
    select
        accuracy.product_id,
        windows.window_hours,
        accuracy.model_version,
        accuracy.target_hour,
        accuracy.abs_error,
        accuracy.persistence_abs_error
    from accuracy
    inner join as_of
        on as_of.product_id = accuracy.product_id
    cross join windows
    where accuracy.target_hour > as_of.as_of_hour - interval windows.window_hours hour
),

models as (
    select distinct
        product_id,
        window_hours,
        model_version
    from in_window
),

hours as (
    select distinct
        product_id,
        window_hours,
        target_hour
    from in_window
),

lacking as (
    -- (model, window) pairs with an hour of the window that the model did not forecast
    select distinct
        models.product_id,
        models.window_hours,
        models.model_version
    from models
    inner join hours
        on hours.product_id = models.product_id
        and hours.window_hours = models.window_hours
    left join in_window as own
        on own.product_id = models.product_id
        and own.window_hours = models.window_hours
        and own.model_version = models.model_version
        and own.target_hour = hours.target_hour
    where own.model_version is null
),

scored as (
    select
        in_window.product_id,
        in_window.window_hours,
        in_window.model_version,
        avg(in_window.abs_error) as mae,
        1 - sum(in_window.abs_error) / sum(in_window.persistence_abs_error) as skill,
        max(case when lacking.model_version is null then 1 else 0 end) as is_ranked
    from in_window
    left join lacking
        on lacking.product_id = in_window.product_id
        and lacking.window_hours = in_window.window_hours
        and lacking.model_version = in_window.model_version
    group by
        in_window.product_id,
        in_window.window_hours,
        in_window.model_version
),

expected as (
    select
        scored.*,
        case when scored.is_ranked = 1 then 1 + (
            select count(*)
            from scored as better
            where better.product_id = scored.product_id
                and better.window_hours = scored.window_hours
                and better.is_ranked = 1
                and better.mae < scored.mae
        ) end as expected_rank
    from scored
),

leaderboard as (
    select
        product_id,
        24 as window_hours,
        model_version,
        mae_24h as mae,
        skill_24h as skill,
        is_ranked_24h as is_ranked,
        rank_24h as model_rank
    from {{ ref('model_leaderboard') }}
    union all
    select
        product_id,
        168,
        model_version,
        mae_168h,
        skill_168h,
        is_ranked_168h,
        rank_168h
    from {{ ref('model_leaderboard') }}
)

select
    expected.*,
    leaderboard.mae as leaderboard_mae,
    leaderboard.skill as leaderboard_skill,
    leaderboard.is_ranked as leaderboard_is_ranked,
    leaderboard.model_rank as leaderboard_rank
from expected
left join leaderboard
    on leaderboard.product_id = expected.product_id
    and leaderboard.window_hours = expected.window_hours
    and leaderboard.model_version = expected.model_version
where leaderboard.model_version is null
    or abs(leaderboard.mae - expected.mae) > 1e-6
    or abs(coalesce(leaderboard.skill, 0) - coalesce(expected.skill, 0)) > 1e-9
    or leaderboard.is_ranked <> expected.is_ranked
    or not (leaderboard.model_rank <=> expected.expected_rank)
