"""candlecast's ML layer: LightGBM next-hour return models that must beat naive baselines to serve.

Modules, one job each: ``features`` (read the dbt feature mart), ``train`` (time-ordered splits,
LightGBM), ``baselines`` (persistence and drift), ``store`` (immutable versioned model folders),
``registry`` (the MariaDB mirror, promotions and predictions), ``evaluate`` + ``promote`` (the weekly
champion/challenger step), ``predict`` (hourly batch inference), ``backtest`` (walk-forward), ``cli``.
Nothing heavy is imported here, so ``import ml`` stays cheap for DAG parsing.
"""
