"""Decoded event tables: operator-declared EVM events, parsed, mapped to columns and decoded.

`declarations` reads what the operator writes (a signature, or an ABI JSON file and an event
name) into an `abi.Event` with its columns; `decoder.EventDecoder` is compiled once per event
and turns each log of it into that table's parameter values.
"""

from __future__ import annotations
