-- Every realized forecast's error, absolute error, interval flag and persistence error follow from its
-- prices; nothing realized is left without an error, and nothing unrealized has one. (The hourly builds check the
-- recent hours only: macros/recent_rows.sql.)
select *
from {{ get_where_subquery(ref('fct_prediction_accuracy')) }}
where (is_realized = 1 and (
        error is null
        or abs(error - (predicted_close - realized_close)) > 1e-6
        or abs(abs_error - abs(error)) > 1e-6
        or abs(persistence_abs_error - abs(previous_close - realized_close)) > 1e-6
        or is_inside_interval <> case when realized_close between lower_80 and upper_80 then 1 else 0 end
    ))
    or (is_realized = 0 and (error is not null or is_inside_interval is not null))
    or lower_80 > upper_80
