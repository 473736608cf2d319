"""Whether a stored model can still be fed the feature mart as it is now: one rule for evaluation and forecasting.

A model is ineligible when a feature it was trained on is no longer a column of the mart, or when the dbt SQL that
computes the features changed since it was trained (``ml.lineage``: its recorded feature hash differs from
today's): fed the same column names with other numbers, it would forecast nonsense without failing. Evaluation
skips such a model with the reason recorded; the hourly step skips it as a shadow (``forecast_skips``), with the
same reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml.lineage import FeatureLineage


def ineligibility(metadata: dict[str, Any], available: set[str], lineage: FeatureLineage) -> str | None:
    """Why the model described by ``metadata`` cannot be fed the mart whose columns are ``available``, computed as
    ``lineage`` says; None if it can."""
    from ml.lineage import stale_reason

    features = list(metadata.get("features") or [])
    missing = [c for c in features if c.lower() not in available]
    if missing:
        return f"features no longer in the table: {', '.join(missing[:5])}"
    return stale_reason(metadata, lineage)
