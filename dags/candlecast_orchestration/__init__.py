"""Support code of the candlecast DAGs (settings, Cosmos task groups, task bodies); not a DAG file itself."""
