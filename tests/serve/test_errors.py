"""Which database errors are an outage (503, retry later) and which are a fault of ours (500)."""

from __future__ import annotations

import pymysql
import pytest
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

from serve.errors import database_unavailable, is_missing_table, is_unavailable


@pytest.mark.parametrize(("error", "outage"), [
    (OperationalError("select 1", {}, pymysql.err.OperationalError(2003, "Can't connect to MySQL server")), True),
    (OperationalError("select 1", {}, pymysql.err.OperationalError(2013, "Lost connection during query")), True),
    (OperationalError("select 1", {}, pymysql.err.OperationalError(1045, "Access denied for user 'reader'")), True),
    (OperationalError("select 1", {}, pymysql.err.OperationalError(1040, "Too many connections")), True),
    (InterfaceError("select 1", {}, pymysql.err.InterfaceError(0, "")), True),
    # a query the marts no longer fit (a renamed column): a bug to fix, not something to retry
    (OperationalError("select x", {}, pymysql.err.OperationalError(1054, "Unknown column 'x'")), False),
    (ProgrammingError("select x", {}, pymysql.err.ProgrammingError(1064, "You have an error in your SQL")), False),
])
def test_only_an_unreachable_or_refusing_database_is_an_outage(error: Exception, outage: bool) -> None:
    assert is_unavailable(error) is outage


def test_a_missing_mart_is_named_as_not_built_and_the_message_holds_no_secret() -> None:
    error = ProgrammingError("select 1", {"password": "hunter2-secret"},
                             pymysql.err.ProgrammingError(1146, "Table 'ct_marts.product_health' doesn't exist"))
    assert is_missing_table(error) and not is_unavailable(error)
    answer = database_unavailable("reader@127.0.0.1:3407", error)
    assert answer.status == 503 and answer.message.startswith("the marts are not built yet on reader@127.0.0.1:3407")
    assert "hunter2" not in answer.message and b"hunter2" not in answer.body()
