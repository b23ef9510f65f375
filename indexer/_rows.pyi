# Types of the C extension indexer/_rows.c (binary COPY rows from JSON-RPC hex strings).
def tx_rows(
    prefix: bytes,
    hashes: list[str],
    senders: list[str],
    receivers: list[str | None],
    values: list[str],
    nonces: list[str],
    gases: list[str],
    gas_prices: list[str | None],
    inputs: list[str],
    types: list[str | None],
    /,
) -> bytes: ...
def log_rows(
    prefix: bytes,
    tx_indexes: list[int],
    tx_hashes: list[str],
    addresses: list[str],
    topics: list[list[str]],
    datas: list[str],
    /,
) -> bytes: ...
