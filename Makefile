# paymesh — the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
BUILD := .build
BUF_VERSION := 1.75.0
BUF := $(BUILD)/node/node_modules/.bin/buf
LINT_PATHS := services tests tools $(wildcard bench examples)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help up test gen check-gen lint buf-lint buf-breaking envoy-validate unit integration bench chaos clean

help:
	@echo "make up     - install, generate, migrate and run the whole platform (Ctrl-C stops it)"
	@echo "make test   - lint, contract checks, unit and integration tests"
	@echo "make gen    - regenerate gen/ from protos/"

# The virtualenv is rebuilt whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

# google/api and google/rpc come from the installed googleapis-common-protos, copied into a
# git-ignored folder; nothing is vendored and nothing is fetched from a registry of protos.
$(BUILD)/protodeps/.copied: $(VENV)/.installed
	$(PY) tools/protodeps.py $(BUILD)/protodeps
	touch $@

$(BUF): 
	mkdir -p $(BUILD)/node
	npm install --silent --no-audit --no-fund --prefix $(BUILD)/node @bufbuild/buf@$(BUF_VERSION)

gen: $(BUILD)/protodeps/.copied
	tools/gen.sh gen

check-gen: $(BUILD)/protodeps/.copied
	rm -rf $(BUILD)/gen-check && tools/gen.sh $(BUILD)/gen-check
	diff -r gen $(BUILD)/gen-check || { echo "gen/ is stale: run 'make gen' and commit"; exit 1; }

buf-lint: $(BUF) $(BUILD)/protodeps/.copied
	$(BUF) lint

# Compares the contracts with main; set BUF_AGAINST to compare with another ref.
BUF_AGAINST ?= .git\#branch=main
buf-breaking: $(BUF) $(BUILD)/protodeps/.copied
	$(BUF) breaking --against '$(BUF_AGAINST)'

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(LINT_PATHS)

envoy-validate: venv
	$(PY) -m services.runtime.envoy --validate

unit: venv
	$(PY) -m pytest tests/unit -q

integration: venv
	$(PY) -m pytest tests/integration -q

test: venv check-gen buf-lint lint envoy-validate
	$(PY) -m pytest -q

up: venv gen
	$(VENV)/bin/paymesh up

clean:
	rm -rf $(BUILD) .pytest_cache .mypy_cache .ruff_cache
