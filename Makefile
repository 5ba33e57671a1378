# Every target bootstraps its own virtual environment from the package registry.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: build check test serve bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

build: $(STAMP)  ## compile manifests/ into generated/
	$(BIN)/gen build

check: $(STAMP)  ## fail when generated/ is out of date
	$(BIN)/gen build --check

test: $(STAMP)  ## lint, type-check the generator, the freshness gate, pyright on the output, then every test
	$(BIN)/ruff check generator tests bench
	$(BIN)/ruff format --check generator tests bench
	$(BIN)/mypy generator
	$(BIN)/gen build --check
	$(BIN)/basedpyright generator/runtime generated
	$(BIN)/python -m pytest -q

GATEWAY_PKG ?= fastn_gateway
PORT        ?= 8000
SERVE_ARGS  ?=

serve: $(STAMP)  ## build, then serve the gateway on SQLite (./var/) with a demo tenant
	$(BIN)/gen build
	PYTHONPATH=generated $(BIN)/python -m $(GATEWAY_PKG) serve --transport http --port $(PORT) --demo $(SERVE_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/build.py

clean:
	rm -rf $(VENV) .mcpforge-cache .pytest_cache .mypy_cache
