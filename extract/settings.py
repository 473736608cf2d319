"""Extractor settings, read once from env vars at the edge (CLI, demo, DAG) and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from candlecast.settings import SettingsError

DEFAULT_API_URL = "https://api.exchange.coinbase.com"
DEFAULT_USER_AGENT = "candlecast-extract/0.1 (+https://github.com/candlecast/candlecast)"


@dataclass(frozen=True)
class ExtractSettings:
    """How the extractor talks to Coinbase (or the replay server) and writes batches.

    The default burst (10) stays below Coinbase's documented 15: the server's bucket sees each request a
    little later than ours spends its token, and network jitter then turns an exactly-matched client into
    occasional 429s. Ten tokens of burst keep five of slack on the server side.
    """

    api_url: str = DEFAULT_API_URL
    products: tuple[str, ...] = ("BTC-USD",)
    rate_per_second: float = 10.0
    burst: int = 10
    max_attempts: int = 5
    timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 120.0
    batch_size: int = 1000
    user_agent: str = DEFAULT_USER_AGENT
    # An incremental run re-fetches this many closed hours before its end, so candles published late or
    # corrected after a first fetch land on a later run (0: fetch only the hours after the newest stored one).
    refetch_hours: int = 24
    # How far behind (hours after the newest stored one) an incremental run catches up on its own; beyond
    # that it refuses and names the backfill to run, so a long outage is never papered over silently.
    max_catchup_hours: int = 168

    def __post_init__(self) -> None:
        problems = []
        if not self.api_url.startswith(("http://", "https://")):
            problems.append(f"COINBASE_API_URL must be an http(s) URL, got {self.api_url!r}")
        if not self.products or any(not p.strip() for p in self.products):
            problems.append(f"products must be non-empty names, got {self.products!r}")
        if self.rate_per_second <= 0:
            problems.append(f"rate must be > 0 requests/s, got {self.rate_per_second}")
        if self.burst < 1:
            problems.append(f"burst must be >= 1, got {self.burst}")
        if self.max_attempts < 1:
            problems.append(f"max attempts must be >= 1, got {self.max_attempts}")
        if self.timeout_s <= 0:
            problems.append(f"timeout must be > 0 s, got {self.timeout_s}")
        if self.batch_size < 1:
            problems.append(f"batch size must be >= 1, got {self.batch_size}")
        if self.refetch_hours < 0:
            problems.append(f"CANDLECAST_EXTRACT_REFETCH_HOURS must be >= 0, got {self.refetch_hours}")
        if self.max_catchup_hours < 1:
            problems.append(f"CANDLECAST_EXTRACT_MAX_CATCHUP_HOURS must be >= 1, got {self.max_catchup_hours}")
        if problems:
            raise SettingsError("; ".join(problems))

    def with_(self, **changes: object) -> ExtractSettings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExtractSettings:
        env = os.environ if env is None else env
        defaults = cls()

        def number(name: str, default: float, kind: type[float] | type[int]) -> float:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                return kind(raw)
            except ValueError as exc:
                raise SettingsError(f"{name} must be a {kind.__name__}, got {raw!r}") from exc

        products = tuple(p.strip() for p in env.get("CANDLECAST_EXTRACT_PRODUCTS", "").split(",") if p.strip())
        return cls(
            api_url=env.get("COINBASE_API_URL", defaults.api_url).rstrip("/"),
            products=products or defaults.products,
            rate_per_second=number("CANDLECAST_EXTRACT_RATE", defaults.rate_per_second, float),
            burst=int(number("CANDLECAST_EXTRACT_BURST", defaults.burst, int)),
            max_attempts=int(number("CANDLECAST_EXTRACT_MAX_ATTEMPTS", defaults.max_attempts, int)),
            timeout_s=number("CANDLECAST_EXTRACT_TIMEOUT", defaults.timeout_s, float),
            backoff_initial_s=number("CANDLECAST_EXTRACT_BACKOFF_INITIAL", defaults.backoff_initial_s, float),
            backoff_max_s=number("CANDLECAST_EXTRACT_BACKOFF_MAX", defaults.backoff_max_s, float),
            batch_size=int(number("CANDLECAST_EXTRACT_BATCH_SIZE", defaults.batch_size, int)),
            user_agent=env.get("CANDLECAST_EXTRACT_USER_AGENT", defaults.user_agent),
            refetch_hours=int(number("CANDLECAST_EXTRACT_REFETCH_HOURS", defaults.refetch_hours, int)),
            max_catchup_hours=int(number("CANDLECAST_EXTRACT_MAX_CATCHUP_HOURS", defaults.max_catchup_hours, int)),
        )
