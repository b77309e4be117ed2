# The two commands: `make demo` and `make test`. Everything else is set-up they call.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest services bench clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	PY=$(PY) scripts/bootstrap.sh $(VENV)
	touch $@

demo: $(STAMP)
	$(BIN)/stkpay demo

test: $(STAMP) services lint typecheck pytest

services:
	scripts/ensure-services.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/smpp_throughput.py
	$(BIN)/python bench/esme_paths.py
	$(BIN)/python bench/ota_packets.py
	$(BIN)/python bench/app_topup.py
	$(BIN)/python bench/ledger_throughput.py
	$(BIN)/python bench/calibration.py
	$(BIN)/python bench/e2e_topup.py --ledger-url "$${STKPAY_TEST_PG:-postgresql://postgres@127.0.0.1:5432/postgres}" \
		--redis-url redis://127.0.0.1:6379/0

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
