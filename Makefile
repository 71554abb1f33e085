# Two commands: `make demo` runs the gateway with simulated wearables; `make test` runs every check.
# Both set themselves up: a virtualenv in .venv with the locked dependencies (uv.lock), via uv from PyPI,
# and the console's map library (Leaflet) from npm as locked in package-lock.json.

PYTHON ?= python3
VENV   := .venv
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
BIN    := $(VENV)/bin
LEAFLET := node_modules/leaflet/dist/leaflet.js
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test lint typecheck pytest bench setup clean

demo: $(VENV)/.synced $(LEAFLET)
	$(BIN)/panic-sim demo

test: $(VENV)/.synced $(LEAFLET) lint typecheck pytest

setup: $(VENV)/.synced $(LEAFLET)

# The console's map library (Leaflet), from the npm registry as locked in package-lock.json.
$(LEAFLET): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv>=0.5,<1"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --extra dev --python $(PYTHON)
	@touch $@

lint: $(VENV)/.synced
	$(BIN)/ruff check gateway firmware-sim tests bench
	$(BIN)/ruff format --check gateway firmware-sim tests bench

typecheck: $(VENV)/.synced
	$(BIN)/mypy

# Every test on SQLite, then everything that touches the database again on PostgreSQL
# (one backend per process: tortoise caches its SQL per model).
pytest: $(VENV)/.synced
	$(BIN)/pytest --db sqlite -m "not postgres"
	$(BIN)/pytest --db postgres -m "db or postgres"

bench: $(VENV)/.synced
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(TOOLS) node_modules .pytest_cache .mypy_cache .ruff_cache var
