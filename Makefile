# Two commands on a fresh machine: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run migrate test lint fuzz bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install          ## migrate and serve on GOCLAW_HOST:GOCLAW_PORT (embedded PostgreSQL without a DSN)
	$(BIN)/goclaw serve

migrate: install
	$(BIN)/goclaw migrate

lint: install
	$(BIN)/ruff check .

test: install lint    ## the whole suite, against real PostgreSQL and real HTTP
	$(BIN)/python -m pytest -q

fuzz: install         ## schemathesis with many more examples per operation
	GOCLAW_FUZZ_EXAMPLES=1000 $(BIN)/python -m pytest -q -s --timeout=0 tests/test_schemathesis.py

bench: install        ## print throughput figures (see bench/README.md)
	$(BIN)/python bench/http_bench.py

clean:
	rm -rf $(VENV) .goclaw .pytest_cache
