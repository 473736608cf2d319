"""How the extractor talks to Coinbase (or the replay server) and writes batches."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from candlecast.inputs import product_id
from candlecast.settings.base import EnvSettings

DEFAULT_API_URL = "https://api.exchange.coinbase.com"
DEFAULT_PRODUCT = "BTC-USD"
DEFAULT_USER_AGENT = "candlecast-extract/0.1 (+https://github.com/candlecast/candlecast)"


class ExtractSettings(EnvSettings):
    """``COINBASE_API_URL`` and ``CANDLECAST_EXTRACT_*``.

    The default burst (10) stays below Coinbase's documented 15: the server's bucket sees each request a
    little later than ours spends its token, and network jitter then turns an exactly-matched client into
    occasional 429s. Ten tokens of burst keep five of slack on the server side.
    """

    api_url: str = Field(DEFAULT_API_URL, validation_alias="COINBASE_API_URL")
    products: Annotated[tuple[str, ...], NoDecode] = Field(
        (DEFAULT_PRODUCT,), validation_alias="CANDLECAST_EXTRACT_PRODUCTS")
    rate_per_second: float = Field(10.0, validation_alias="CANDLECAST_EXTRACT_RATE")
    burst: int = Field(10, validation_alias="CANDLECAST_EXTRACT_BURST")
    max_attempts: int = Field(5, validation_alias="CANDLECAST_EXTRACT_MAX_ATTEMPTS")
    timeout_s: float = Field(10.0, validation_alias="CANDLECAST_EXTRACT_TIMEOUT")
    backoff_initial_s: float = Field(0.5, validation_alias="CANDLECAST_EXTRACT_BACKOFF_INITIAL")
    backoff_max_s: float = Field(30.0, validation_alias="CANDLECAST_EXTRACT_BACKOFF_MAX")
    retry_after_max_s: float = 120.0
    batch_size: int = Field(1000, validation_alias="CANDLECAST_EXTRACT_BATCH_SIZE")
    user_agent: str = Field(DEFAULT_USER_AGENT, validation_alias="CANDLECAST_EXTRACT_USER_AGENT")
    # An incremental run re-fetches this many closed hours before its end, so candles published late or
    # corrected after a first fetch land on a later run (0: fetch only the hours after the newest stored one).
    refetch_hours: int = Field(24, validation_alias="CANDLECAST_EXTRACT_REFETCH_HOURS")
    # How far behind (hours after the newest stored one) an incremental run catches up on its own; beyond
    # that it refuses and names the backfill to run, so a long outage is never papered over silently.
    max_catchup_hours: int = Field(168, validation_alias="CANDLECAST_EXTRACT_MAX_CATCHUP_HOURS")

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("products", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            # "BTC-USD, ETH-USD,," names two products; a value naming none leaves the default.
            return tuple(p.strip() for p in value.split(",") if p.strip()) or (DEFAULT_PRODUCT,)
        return value

    @field_validator("products")
    @classmethod
    def _named(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not p.strip() for p in value):
            raise ValueError("must name products (comma-separated)")
        # Product ids become SQL values, folder and file names: held to Coinbase's shape at this edge.
        return tuple(product_id(p) for p in value)

    @field_validator("rate_per_second")
    @classmethod
    def _positive_rate(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the request rate must be > 0 requests/s")
        return value

    @field_validator("refetch_hours")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be >= 0")
        return value

    @field_validator("burst", "max_attempts", "batch_size", "max_catchup_hours")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1")
        return value

    @field_validator("timeout_s")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0 seconds")
        return value
