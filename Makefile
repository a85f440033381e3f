# Everything a fresh machine needs, from Python 3.11+ alone: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The demo keeps Dagster's history and the demo databases here unless DAGSTER_HOME is set.
DEMO_HOME := $(or $(DAGSTER_HOME),$(CURDIR)/.dagster)

.PHONY: install demo demo-run odbc chromium test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

# Created once; an instance config already in DAGSTER_HOME is left alone.
$(DEMO_HOME)/dagster.yaml:
	mkdir -p $(DEMO_HOME)
	cp dagster.yaml $@

# Sync every demo table once (mass partition), headless.
demo-run: install $(DEMO_HOME)/dagster.yaml
	DAGSTER_HOME=$(DEMO_HOME) $(BIN)/dagster asset materialize -m sync_assets.definitions --select '*' --partition mass

# The same, then the Dagster UI with its daemon on http://127.0.0.1:3000.
demo: demo-run
	DAGSTER_HOME=$(DEMO_HOME) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# ODBC drivers for the pyodbc tests (psqlODBC loads rows, FreeTDS yields real driver errors).
# Installed only as root with apt-get; otherwise those tests skip, and this says so.
ODBC_PACKAGES := unixodbc odbc-postgresql tdsodbc
ODBC_DRIVERS = $(shell odbcinst -q -d 2>/dev/null)

odbc:
ifeq ($(and $(findstring PostgreSQL Unicode,$(ODBC_DRIVERS)),$(findstring FreeTDS,$(ODBC_DRIVERS))),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(ODBC_PACKAGES) && \
		{ odbcinst -q -d | grep -q FreeTDS || odbcinst -i -d -f /usr/share/tdsodbc/odbcinst.ini; }; \
	else \
		echo "ODBC drivers missing: the ODBC tests will be skipped (install: sudo apt-get install $(ODBC_PACKAGES))"; \
	fi
else
	@true
endif

# Debian's Chromium for the browser test of the UI (playwright drives it; no browser download).
# Installed only as root with apt-get; otherwise that test is skipped, and this says so.
chromium:
	@if command -v chromium >/dev/null; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "chromium missing: the browser test will be skipped (install: sudo apt-get install chromium)"; \
	fi

test: install odbc chromium
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .dagster *.egg-info
