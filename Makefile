# The two commands a newcomer needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv anvil electrumx lint format test demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml hatch_build.py indexer/_rows.c indexer/_proof.c indexer/_buf.h  # the C extensions are built here
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

anvil:
	@scripts/install-anvil.sh >/dev/null

# ElectrumX (PyPI e-x, pinned) in its own venv under .tools/, for the Electrum tests.
electrumx:
	@scripts/install-electrumx.sh >/dev/null

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Lint, then every test against a real PostgreSQL (found, started or installed by
# scripts/ensure-postgres.sh), a real anvil and a real ElectrumX.
test: venv anvil electrumx lint
	INDEXER_TEST_DSN="$$(PY=$(PY) scripts/ensure-postgres.sh)" $(PY) -m pytest -q $(PYTEST_ARGS)

# A local devnet that keeps producing blocks, indexed into an embedded Postgres (or
# $$INDEXER_DATABASE_URL when set). Ctrl-C stops everything.
demo: venv anvil
	$(PY) -m indexer.devnet.demo

# Benchmarks (not part of `make test`): the whole suite in ~15 min, BENCH_ARGS=--quick in ~2;
# one table on stdout, JSON in benchmarks/results/. See benchmarks/README.md.
bench: venv anvil electrumx
	INDEXER_TEST_DSN="$$(PY=$(PY) scripts/ensure-postgres.sh)" $(PY) -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .tools .demo .pytest_cache .mypy_cache .ruff_cache indexer/*.so
