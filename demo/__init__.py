"""`make demo` (``python -m demo``): the whole offline pipeline on the bundled real BTC-USD candles.

The demo sits on top of the stages: each step module calls one stage's library functions (extract, dbt
through ``candlecast.dbt_runner``, ml, the DAGs as Airflow parses them) and returns a short summary;
``__main__`` runs them in order. Nothing below imports it.
"""
