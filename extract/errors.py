"""The extractor's exceptions; every message names the product and window it concerns."""

from __future__ import annotations


class ExtractError(RuntimeError):
    """Base of every extractor failure the CLI turns into a one-line reason."""


class FetchError(ExtractError):
    """The API refused the request, or kept failing after every allowed attempt."""


class MalformedResponse(ExtractError):
    """The answer was not a JSON array of candles (HTML page, garbage, truncated body, wrong shape)."""


class LoadError(ExtractError):
    """Writing a window's rows to the database failed; the window's transaction was rolled back."""


class NothingToResume(ExtractError):
    """An incremental run found no stored candle to resume from and was given no initial start."""
