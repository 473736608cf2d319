"""Hostile input is refused at the edge: a clear error naming the value, and nothing written anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from candlecast.inputs import InvalidInput, product_id, schema_base
from candlecast.settings import DbServer, ExtractSettings, SettingsError, ml_settings
from cycle.context import RunContext, parse_products
from ml.model import PERSISTENCE, ConstantForecaster
from ml.store import ModelStore

REPO = Path(__file__).resolve().parents[2]
HOSTILE_IDS = [
    "BTC-USD'; drop table x; --",
    "../../etc",
    "",
    "ВТС-USD",  # Cyrillic Ve, Te, Es: looks like BTC-USD, is not
    "ＢＴＣ-USD",  # full-width letters
    "BTC-USD\n",
    "btc-usd/../../x",
]


@pytest.mark.parametrize("value", HOSTILE_IDS)
def test_a_hostile_product_id_is_refused_naming_the_value(value: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        product_id(value, "CANDLECAST_EXTRACT_PRODUCTS")
    assert repr(value) in str(refused.value) and "CANDLECAST_EXTRACT_PRODUCTS" in str(refused.value)


@pytest.mark.parametrize("value", ["candlecast; drop database x", "../etc", "", "cаndlecast", "a-b", "1abc", "x" * 52])
def test_a_schema_base_must_be_a_plain_identifier(value: str) -> None:
    with pytest.raises(InvalidInput, match="not a plain identifier"):
        schema_base(value, "CANDLECAST_DB_SCHEMA")


def test_real_product_ids_pass() -> None:
    assert [product_id(p) for p in ("BTC-USD", "ETH-EUR", "1INCH-USD")] == ["BTC-USD", "ETH-EUR", "1INCH-USD"]
    assert schema_base("candlecast") == "candlecast"


@pytest.mark.parametrize(("variable", "value"), [
    ("CANDLECAST_EXTRACT_PRODUCTS", "BTC-USD,../../etc"),
    ("CANDLECAST_PRODUCT", "ВТС-USD"),
    ("CANDLECAST_DB_SCHEMA", "candlecast`; drop database candlecast_raw; --"),
])
def test_env_vars_are_checked_at_the_settings_edge(variable: str, value: str) -> None:
    reads = {"CANDLECAST_EXTRACT_PRODUCTS": ExtractSettings.from_env, "CANDLECAST_PRODUCT": ml_settings,
             "CANDLECAST_DB_SCHEMA": DbServer.from_env}[variable]
    with pytest.raises(SettingsError) as refused:
        reads({variable: value})
    assert str(refused.value).startswith(variable)
    assert "is not a product id" in str(refused.value) or "is not a plain identifier" in str(refused.value)


def test_the_airflow_variable_is_checked_like_the_cli_and_env() -> None:
    with pytest.raises(SettingsError, match=r"Airflow Variable candlecast_products.*is not a product id"):
        parse_products("BTC-USD'; drop table x; --", "Airflow Variable candlecast_products")
    with pytest.raises(SettingsError, match="CANDLECAST_EXTRACT_PRODUCTS"):
        RunContext.resolve({"CANDLECAST_EXTRACT_PRODUCTS": "../../etc"})


def test_the_model_store_refuses_a_product_that_would_leave_its_folder(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    model = ConstantForecaster(PERSISTENCE, 0.0, -0.01, 0.01)
    with pytest.raises(InvalidInput):
        store.save(model, {"product": "../../etc", "training_cutoff": datetime(2024, 1, 1, tzinfo=UTC)})
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.integration
def test_the_clis_refuse_a_hostile_product_before_touching_anything(
        tmp_path: Path, provision_schemas, admin_engine) -> None:
    schemas = provision_schemas("ct_hostile", fresh=True)
    env = {**os.environ, "CANDLECAST_DB_SCHEMA": schemas.base, "CANDLECAST_MODEL_STORE": str(tmp_path / "store"),
           "CANDLECAST_BACKTEST_DIR": str(tmp_path / "backtest"), "COINBASE_API_URL": "http://127.0.0.1:9",
           "PYTHONPATH": str(REPO)}
    hostile = "BTC-USD'; drop table x; --"
    for command in (["extract", "backfill", "--start", "2024-01-01", "--end", "2024-01-02", "--product", hostile],
                    ["ml", "backtest", "--product", "../../etc"],
                    ["cycle", "--end", "2024-01-01T00:00", "--product", "ВТС-USD"]):
        done = subprocess.run([sys.executable, "-m", *command], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (command, done.stderr)
        assert "is not a product id" in done.stderr and repr(command[-1]) in done.stderr, done.stderr
    names = ", ".join(f"'{db}'" for db in schemas.all())
    with admin_engine.connect() as conn:
        tables = conn.execute(text(f"select count(*) from information_schema.tables where table_schema in ({names})"))
        tables = tables.scalar_one()
    assert tables == 0
    assert list(tmp_path.iterdir()) == []


def test_a_model_store_variable_must_stay_inside_the_local_dir(tmp_path: Path) -> None:
    from candlecast.inputs import folder_within

    local = tmp_path / "local"
    assert folder_within(str(local / "models"), local) == (local / "models").resolve()
    for value in ("/etc", str(local / ".." / "elsewhere"), "models", ""):
        with pytest.raises(InvalidInput, match="candlecast_model_store"):
            folder_within(value, local, "Airflow Variable candlecast_model_store")
