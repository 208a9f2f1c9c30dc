# Two commands for a fresh machine with only Python 3.11+: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
PORT ?= 8000

.PHONY: run test bench lint migrate clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

## Migrate, load demo data, then run the Procfile's processes (web, worker, certificates,
## relay, projector) until Ctrl-C.
run: $(BIN)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/honcho start -f Procfile -p $(PORT)

## The whole test suite (real services when DATABASE_URL / CELERY_BROKER_URL name them).
test: $(BIN)/.installed
	$(BIN)/pytest $(PYTEST_ARGS)

## Benchmarks against PostgreSQL and RabbitMQ: prints a table, writes bench/results.json.
bench: $(BIN)/.bench-installed
	@command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null 2>&1 || \
		echo "wrk is not installed: the HTTP figures use the slower Python load generator"
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .

migrate: $(BIN)/.installed
	$(BIN)/python manage.py migrate --noinput

clean:
	rm -rf var/broker var/petstore.sqlite3*
