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
# gRPC's fork handlers abort processes that fork while a thread is in gRPC (services/__init__.py);
# pytest's plugins import grpc before any paymesh module can switch them off.
export GRPC_ENABLE_FORK_SUPPORT ?= 0

.PHONY: help up test gen check-gen lint buf-lint buf-breaking envoy-validate unit integration bench chaos fuzz clean promtool

help:
	@echo "make up     - install, generate, migrate and run the whole platform (Ctrl-C stops it)"
	@echo "              PAYMESH_REPLICAS=2 PAYMESH_WORKER_REPLICAS=2 make up: two copies of each"
	@echo "make test   - lint, contract checks, unit and integration tests"
	@echo "make gen    - regenerate gen/ from protos/"
	@echo "make bench  - benchmarks against same-run baselines (BENCH_QUICK=1: ~2 min)"
	@echo "make chaos  - the long fault run (CHAOS_SEED=n repeats one); see docs/reliability.md"
	@echo "make fuzz   - the long schemathesis run of the OpenAPI document (FUZZ_EXAMPLES=n)"

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
	$(PY) -m services.runtime.envoy --kubernetes
	$(PY) tools/prometheus_rule.py

check-gen: $(BUILD)/protodeps/.copied
	rm -rf $(BUILD)/gen-check && tools/gen.sh $(BUILD)/gen-check
	diff -r -x __pycache__ gen $(BUILD)/gen-check || { echo "gen/ is stale: run 'make gen' and commit"; exit 1; }

buf-lint: $(BUF) $(BUILD)/protodeps/.copied
	$(BUF) lint

# Compares the contracts with the last released ones (contracts/released/, the newest folder),
# or with a git ref (BUF_AGAINST=main): they are copied next to this checkout's google/api and
# google/rpc copies, which git does not hold. `make test` runs it.
RELEASED := $(lastword $(sort $(wildcard contracts/released/*)))
BUF_AGAINST ?=
buf-breaking: $(BUF) $(BUILD)/protodeps/.copied
	rm -rf $(BUILD)/against && mkdir -p $(BUILD)/against/$(BUILD)
	$(if $(BUF_AGAINST),git archive '$(BUF_AGAINST)' protos buf.yaml | tar -x -C $(BUILD)/against,cp -r $(RELEASED)/protos $(RELEASED)/buf.yaml $(BUILD)/against/)
	cp -r $(BUILD)/protodeps $(BUILD)/against/$(BUILD)/protodeps
	$(BUF) breaking --against $(BUILD)/against

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

test: venv check-gen buf-lint buf-breaking lint envoy-validate frontend frontend-check chromium promtool
	$(PY) -m pytest -q

up: venv gen frontend
	$(VENV)/bin/paymesh up

# The long fault run (tests/chaos; `make test` runs a bounded one). CHAOS_SEED=n repeats a run;
# CHAOS_PAYMENTS, CHAOS_FAULTS and CHAOS_NETWORK_FAULTS (on the fault proxies) size it.
chaos: venv
	CHAOS_PAYMENTS=$${CHAOS_PAYMENTS:-300} CHAOS_FAULTS=$${CHAOS_FAULTS:-25} \
		CHAOS_NETWORK_FAULTS=$${CHAOS_NETWORK_FAULTS:-40} \
		CHAOS_DRAIN_TIMEOUT_S=$${CHAOS_DRAIN_TIMEOUT_S:-900} $(PY) -m pytest tests/chaos -q -s

# The long conformance run: schemathesis over every operation of gen/openapi.json against the
# live platform (`make test` runs the same test with 12 examples per operation).
fuzz: venv
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-200} $(PY) -m pytest tests/integration/test_conformance.py -q

# Benchmarks (never part of `make test`; see bench/README.md): about 10 minutes on 2 cores.
# BENCH_QUICK=1 runs a ~2 minute smoke of every scenario; BENCH_PROFILE=1 adds a py-spy profile
# of create-payment. Load comes from wrk (Debian), installed here when missing.
bench: venv
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(PY) -m bench.run

# Web apps (frontend/, see frontend/README.md): npm ci from the lockfile, TypeScript types
# generated from protos/ (buf + the lockfile's protoc-gen-es, into git-ignored frontend/gen),
# then `ng build` of each app. Each step is skipped while its inputs are unchanged, so a second
# `make up` starts in seconds.
.PHONY: frontend frontend-gen frontend-check chromium
FRONTEND_SOURCES := $(shell find frontend/projects frontend/shared frontend/tools -type f 2>/dev/null) \
	frontend/angular.json frontend/tsconfig.json
PROTO_SOURCES := $(shell find protos -name '*.proto')

frontend/node_modules/.installed: frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	touch $@

frontend/gen/.generated: $(PROTO_SOURCES) frontend/buf.gen.yaml frontend/node_modules/.installed \
		| $(BUF) $(BUILD)/protodeps/.copied
	cd frontend && BUF=$(CURDIR)/$(BUF) node tools/gen-types.mjs
	touch $@

frontend/dist/.built: frontend/gen/.generated $(FRONTEND_SOURCES) frontend/node_modules/.installed
	cd frontend && NG_CLI_ANALYTICS=false npx ng build dashboard && NG_CLI_ANALYTICS=false npx ng build merchant \
		&& NG_CLI_ANALYTICS=false npx ng build checkout
	touch $@

# The API reference at /docs/: Redoc's standalone bundle from npm, pinned by version and by the
# registry's integrity hash, beside frontend/reference/index.html (it renders /v1/openapi.json).
REDOC_VERSION := 3.0.1
REDOC_INTEGRITY := sha512-KDfoKaYW19LCl4YStgBnwlaNjYEFfs5zCNt1s1WZ2YM5u8d26Yuzd2l43fZO851ZsgIMe/D640fDJkD8eaRQKQ==
frontend/dist/docs/browser/.built: frontend/reference/index.html
	rm -rf $(BUILD)/redoc && mkdir -p $(BUILD)/redoc frontend/dist/docs/browser
	npm pack --silent --pack-destination $(BUILD)/redoc redoc@$(REDOC_VERSION) >/dev/null
	test "sha512-$$(openssl dgst -sha512 -binary $(BUILD)/redoc/redoc-$(REDOC_VERSION).tgz | base64 -w0)" = "$(REDOC_INTEGRITY)"
	tar -xzf $(BUILD)/redoc/redoc-$(REDOC_VERSION).tgz -C $(BUILD)/redoc package/bundles/redoc.standalone.js
	cp $(BUILD)/redoc/package/bundles/redoc.standalone.js frontend/reference/index.html frontend/dist/docs/browser/
	touch $@

frontend-gen: frontend/gen/.generated

frontend: frontend/dist/.built frontend/dist/docs/browser/.built

# angular-eslint (with its template accessibility rules) over the apps, then the unit tests of
# the pure logic (frontend/tests/unit) on node's own test runner, TypeScript loaded by tsx.
frontend-check: frontend/gen/.generated
	cd frontend && npx eslint . && node --import tsx --test tests/unit/*.test.ts

# Browser tests drive Debian's chromium, installed here when missing (never a browser download).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The metrics tests check every /metrics with promtool, from Debian's prometheus (installed
# here when missing; only the tool is used, no server is started).
promtool:
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

clean:
	rm -rf $(BUILD) .pytest_cache .mypy_cache .ruff_cache
