"""Development-only tools (not shipped in the wheel): the Coinbase replay server and its fault injection."""
