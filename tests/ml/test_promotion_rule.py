"""The promotion rule on its own: lowest MAE wins, ties go to the simpler model, persistence must compete."""

from datetime import datetime

import pytest

from ml.evaluate import SCORED, SKIPPED, EvaluationReport, ModelResult
from ml.metrics import Scores
from ml.promote import PromotionError, choose


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
    winner, reference = choose(report)
    assert winner.version == "b" and reference.version == "p"


def test_persistence_keeps_production_when_nothing_beats_it_ties_included() -> None:
    report = _report(ModelResult("a", "lightgbm", SCORED, None, _scores(100.0)), PERSIST,
                     ModelResult("d", "naive_drift", SCORED, None, _scores(100.0)))
    assert choose(report)[0].version == "p"


def test_without_a_scored_persistence_nothing_is_promoted() -> None:
    report = _report(ModelResult("a", "lightgbm", SCORED, None, _scores(50.0)),
                     ModelResult("p", "naive_persistence", SKIPPED, "checksum failed"))
    with pytest.raises(PromotionError, match="BTC-USD: no naive_persistence model was scored"):
        choose(report)
