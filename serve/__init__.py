"""The read API and dashboard: forecasts, features, the leaderboard and health, over HTTP, as the ``reader`` role.

Data flows one way: the API reads the marts dbt builds (``{base}_marts``) and writes nothing; the role it
connects as can only SELECT there. ``serve.app.create_app`` builds the FastAPI app (the same in tests, the
benchmark and ``python -m serve``); ``serve.marts`` holds every query; ``serve.dashboard`` renders the page.
"""
