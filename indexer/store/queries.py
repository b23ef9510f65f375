"""Parse `queries.sql` once into named, parameterised queries."""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString, cast

_NAME_RE = re.compile(r"^-- name: (\w+) --$", re.MULTILINE)


def parse(text: str) -> dict[str, LiteralString]:
    """Split `text` at `-- name: X --` markers; the description lines stay in the SQL."""
    parts = _NAME_RE.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"duplicate query name {name!r} in queries.sql")
        # Trusted text shipped with the package, never built from input.
        queries[name] = cast(LiteralString, body.strip())
    return queries


def _load() -> dict[str, LiteralString]:
    return parse(resources.files("indexer.store").joinpath("queries.sql").read_text("utf-8"))


Q = _load()
