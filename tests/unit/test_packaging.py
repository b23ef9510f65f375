"""A plain `pip install .` finds the migrations and named queries (INTERFACE: `indexer migrate`)
and the compiled row encoder of the EVM fast path."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_ships_migrations_and_queries(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("indexer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for migration in sorted((REPO / "migrations").glob("*.sql")):
        assert f"indexer/migrations/{migration.name}" in names
    assert "indexer/store/queries.sql" in names
    # The C extension is built into the wheel (a platform wheel, not a pure-Python one).
    assert any(n.startswith("indexer/_rows.") and n.endswith(".so") for n in names), names
    assert any(n.startswith("indexer/_proof.") and n.endswith(".so") for n in names), names
    assert "-py3-none-any" not in wheel.name
