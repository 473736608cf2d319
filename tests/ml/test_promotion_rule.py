"""The promotion rule on its own: lowest MAE wins, ties go to the simpler model, persistence must compete; the live
record decides between models that have one, a newly trained model must beat its champion on the holdout."""

from datetime import datetime

import pytest

from ml.evaluate import SCORED, SKIPPED, EvaluationReport, ModelResult
from ml.live import LiveRecord
from ml.metrics import Scores
from ml.promote import HOLDOUT, LIVE, PromotionError, choose


def _scores(mae: float) -> Scores:
    return Scores(n=100, mae=mae, rmse=mae, mape=0.1, direction_accuracy=0.5, persistence_mae=100.0,
                  skill=1 - mae / 100.0, coverage_80=0.8, pinball_10=1.0, pinball_90=1.0)


def _report(*results: ModelResult) -> EvaluationReport:
    return EvaluationReport("BTC-USD", datetime(2024, 1, 1), datetime(2024, 1, 8), 100, list(results))


PERSIST = ModelResult("p", "naive_persistence", SCORED, None, _scores(100.0))


def test_lowest_mae_wins_and_a_skipped_model_never_does() -> None:
    report = _report(PERSIST, ModelResult("a", "lightgbm", SCORED, None, _scores(99.5)),
                     ModelResult("b", "lightgbm", SCORED, None, _scores(99.0)),
                     ModelResult("broken", "lightgbm", SKIPPED, "checksum failed"))
    choice = choose(report)
    assert (choice.winner.version, choice.reference.version, choice.evidence) == ("b", "p", HOLDOUT)


def test_persistence_keeps_production_when_nothing_beats_it_ties_included() -> None:
    report = _report(ModelResult("a", "lightgbm", SCORED, None, _scores(100.0)), PERSIST,
                     ModelResult("d", "naive_drift", SCORED, None, _scores(100.0)))
    assert choose(report).winner.version == "p"


def test_without_a_scored_persistence_nothing_is_promoted() -> None:
    report = _report(ModelResult("a", "lightgbm", SCORED, None, _scores(50.0)),
                     ModelResult("p", "naive_persistence", SKIPPED, "checksum failed"))
    with pytest.raises(PromotionError, match="BTC-USD: no naive_persistence model was scored"):
        choose(report)


# --- the live record beside the holdout ------------------------------------------------------------------

def _live(mae: dict[str, float], persistence: float, hours: int = 336) -> LiveRecord:
    return LiveRecord(datetime(2023, 12, 11), datetime(2024, 1, 8), hours, mae, persistence, {})


A, B = (ModelResult("a", "lightgbm", SCORED, None, _scores(99.0)),
        ModelResult("b", "lightgbm", SCORED, None, _scores(99.5)))


def test_the_live_record_decides_between_models_that_have_one() -> None:
    # b loses the holdout week but has the better four weeks of real forecasts: b serves, on the live evidence
    choice = choose(_report(PERSIST, A, B), _live({"a": 101.0, "b": 98.0, "p": 100.0}, 100.0))
    assert (choice.winner.version, choice.evidence) == ("b", LIVE)
    # without a usable record (too few hours) the holdout alone decides, as before
    short = choose(_report(PERSIST, A, B), _live({"a": 101.0, "b": 98.0}, 100.0, hours=100))
    assert (short.winner.version, short.evidence) == ("a", HOLDOUT)


def test_a_newly_trained_model_must_beat_the_live_champion_on_the_holdout() -> None:
    newcomer = ModelResult("n", "lightgbm", SCORED, None, _scores(99.2))
    choice = choose(_report(PERSIST, A, B, newcomer), _live({"a": 101.0, "b": 98.0, "p": 100.0}, 100.0))
    assert (choice.winner.version, choice.evidence, choice.champion and choice.champion.version) == (
        "n", HOLDOUT, "b")  # n (no record yet) beats b's 99.5 on the holdout


def test_persistence_is_the_live_champion_when_no_model_beats_it_live() -> None:
    # a and b win the holdout week, but over four weeks neither beat persistence's MAE on the same hours
    choice = choose(_report(PERSIST, A, B), _live({"a": 100.5, "b": 101.0}, 100.0))
    assert (choice.winner.version, choice.evidence) == ("p", LIVE)
    # a tie with persistence live goes to persistence too
    assert choose(_report(PERSIST, A, B), _live({"a": 100.0, "b": 100.2, "p": 100.0}, 100.0)).winner.version == "p"
