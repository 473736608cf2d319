"""The extractor's exceptions; every message names the product and window it concerns."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from extract.windows import Window


class ExtractError(RuntimeError):
    """Base of every extractor failure the CLI turns into a one-line reason."""


class FetchError(ExtractError):
    """The API refused the request, or kept failing after every allowed attempt."""


class MalformedResponse(ExtractError):
    """A well-formed JSON answer that is not an array of candles (bodies that are not JSON are retried)."""


class LoadError(ExtractError):
    """Writing a window's rows to the database failed; the window's transaction was rolled back."""


class NothingToResume(ExtractError):
    """An incremental run found no stored candle to resume from and was given no initial start."""


class TooFarBehind(ExtractError):
    """An incremental run found a product further behind than it catches up on its own; a backfill is needed.

    ``missing`` holds the hours after the newest stored one that the run refused to fetch.
    """

    def __init__(self, message: str, missing: Window) -> None:
        super().__init__(message)
        self.missing = missing


class NeedsBackfill(ExtractError):
    """Every product that failed an incremental run is too far behind, or has nothing stored: waiting and
    retrying cannot help, only the backfill each message names. Schedulers fail such a run at once."""
