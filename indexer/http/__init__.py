"""Health and metrics over HTTP (aiohttp), served by `indexer sync` when `[http] listen` is set."""
