"""`python -m indexer` runs the CLI."""

from __future__ import annotations

from indexer.cli import main

if __name__ == "__main__":  # not when a spawned worker process imports it
    main()
