# tickcast: `make run` serves with the embedded defaults, `make test` runs everything.
# Both bootstrap .venv on a fresh machine (python3 >= 3.11 required).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.stamp-run
DEV_STAMP := $(VENV)/.stamp-dev
LOAD_STAMP := $(VENV)/.stamp-load
BROWSER_STAMP := $(VENV)/.stamp-browser
REDIS_STAMP := $(VENV)/.stamp-redis
# The official AsyncAPI 3.0.0 JSON Schema for tests/test_asyncapi.py (no PyPI package
# ships it): fetched at install, so that the suite itself needs nothing from outside.
ASYNCAPI_SPECS := @asyncapi/specs@6.11.1
ASYNCAPI_SCHEMA := $(VENV)/share/asyncapi/3.0.0.json
LINTED := src tests bench loadtest
# Every install is constrained to the versions the suite last passed with (make lock).
LOCK := constraints.txt
PIP_INSTALL := $(BIN)/python -m pip install --quiet -c $(LOCK)

.PHONY: run test lock lint typecheck pytest loadtest bench bench-storage bench-fanout clean

# pip and setuptools (the build backend: pyproject.toml pins the same version) come
# from the lock too, also into a venv made before the lock named them (each install step).
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade -c $(LOCK) pip setuptools

$(RUN_STAMP): pyproject.toml $(LOCK) Makefile | $(BIN)/python
	$(PIP_INSTALL) pip setuptools -e .
	touch $@

$(DEV_STAMP): pyproject.toml $(LOCK) Makefile | $(BIN)/python
	$(PIP_INSTALL) pip setuptools -e '.[dev]'
	touch $@ $(RUN_STAMP)

$(LOAD_STAMP): pyproject.toml $(LOCK) Makefile | $(BIN)/python
	$(PIP_INSTALL) pip setuptools -e '.[dev,load]'
	touch $@ $(DEV_STAMP) $(RUN_STAMP)

# Re-resolve every dependency (runtime, dev, load) to its newest allowed version in a
# scratch venv and record the result in $(LOCK). Run it on purpose, then make test.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip setuptools
	.venv-lock/bin/python -m pip install --quiet -e '.[dev,load]'
	{ echo "# The exact versions make run / make test install (pip -c). Refresh on purpose with: make lock"; \
	  echo "# (setuptools is also pinned in pyproject.toml's build-system: keep the two equal)"; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable; } > $(LOCK)
	rm -rf .venv-lock

# The dashboard test drives Debian's Chromium with Playwright (never a downloaded browser).
$(BROWSER_STAMP): | $(BIN)/python
	@command -v chromium >/dev/null || { \
		echo "installing Debian's chromium for the dashboard test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	touch $@

# The scale-out tests run a real redis-server (Debian's package, the reference Redis).
$(REDIS_STAMP): | $(BIN)/python
	@command -v redis-server >/dev/null || { \
		echo "installing Debian's redis-server for the scale-out tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	touch $@

# Fetched with Debian's npm from the AsyncAPI initiative's own package (Apache-2.0).
$(ASYNCAPI_SCHEMA): | $(BIN)/python
	@command -v npm >/dev/null || { \
		echo "installing Debian's npm to fetch the AsyncAPI JSON Schema"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	rm -rf $(@D)/tmp && mkdir -p $(@D)/tmp
	cd $(@D)/tmp && npm pack --silent $(ASYNCAPI_SPECS) >/dev/null
	tar -xzf $(@D)/tmp/*.tgz -C $(@D)/tmp package/schemas/3.0.0.json
	mv $(@D)/tmp/package/schemas/3.0.0.json $@
	rm -rf $(@D)/tmp

run: $(RUN_STAMP)
	$(BIN)/tickcast serve $(ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

pytest: $(DEV_STAMP) $(BROWSER_STAMP) $(REDIS_STAMP) $(ASYNCAPI_SCHEMA)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

loadtest: $(LOAD_STAMP)
	$(BIN)/python loadtest/run $(ARGS)

bench-storage: $(DEV_STAMP)
	$(BIN)/python bench/storage.py $(ARGS)

bench-fanout: $(LOAD_STAMP)
	$(BIN)/python bench/fanout.py $(ARGS)

bench: bench-storage bench-fanout

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
