"""Tests against a real ElectrumX, fed by an in-process bitcoind simulator."""

from __future__ import annotations
