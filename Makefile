# modelhub: `make up` starts the whole stack locally, `make test` runs every check and test.
# Both install what they need on a fresh machine (a Python 3.11 venv in .venv, packages from uv.lock).

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9
STAMP := $(VENV)/.synced

.PHONY: help install system-deps up down clean logs status proto proto-check lint format typecheck test test-fast images

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found); set PYTHON=/path/to/python3.11"; exit 1; }
	@echo "==> creating the virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(UV): $(BIN)/python
	@echo "==> installing uv $(UV_VERSION) into $(VENV)"
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	@echo "==> installing the workspace from uv.lock (first run downloads packages)"
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --all-packages --python $(BIN)/python
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install every package

system-deps: ## install the Debian packages the tests use (docker-registry, prometheus, chromium), when missing
	@if ! command -v docker-registry >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then echo "==> installing docker-registry (Debian) for the pull tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; \
	  else echo "docker-registry is missing: run 'sudo apt-get install -y docker-registry'"; exit 1; fi; fi
	@if ! command -v prometheus >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then echo "==> installing prometheus (Debian) for the metrics tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "prometheus is missing: run 'sudo apt-get install -y prometheus'"; exit 1; fi; fi
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then echo "==> installing chromium and chromium-driver (Debian) for the console's browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium is missing: run 'sudo apt-get install -y chromium chromium-driver'"; exit 1; fi; fi

up: install ## install, then start NATS, Postgres, S3 and the four services in the background (MONITORING=1: and Prometheus; CLUSTER=1: three NATS nodes, two replicas of each service)
	$(BIN)/modelhub-dev up $(if $(MONITORING),--monitoring) $(if $(CLUSTER),--cluster)

down: ## stop what `make up` started (data is kept in .modelhub/)
	@if [ -x $(BIN)/modelhub-dev ]; then $(BIN)/modelhub-dev down; else echo "nothing to stop: no .venv"; fi

clean: ## stop everything and delete .modelhub/ (all local data)
	@if [ -x $(BIN)/modelhub-dev ]; then $(BIN)/modelhub-dev clean; else rm -rf .modelhub; fi

logs: install ## show where each component logs
	$(BIN)/modelhub-dev logs

status: install ## health of every service of the running stack
	$(BIN)/modelhub status

proto: install ## regenerate Python code from proto/
	$(BIN)/python scripts/gen_proto.py

proto-check: install
	$(BIN)/python scripts/gen_proto.py --check

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint services/*/Dockerfile

format: install ## fix lint and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy libs/common/src libs/devstack/src libs/cli/src services/*/src

images: ## how to build the container images (needs a Docker engine)
	@for s in registry puller rag chat-gateway console; do echo "docker build -f services/$$s/Dockerfile -t modelhub/$$s:0.1.0 ."; done
	@if command -v docker >/dev/null && docker info >/dev/null 2>&1; then \
	  for s in registry puller rag chat-gateway console; do docker build -f services/$$s/Dockerfile -t modelhub/$$s:0.1.0 . || exit 1; done; \
	else echo "(no Docker engine here: the commands above are what to run where one exists)"; fi

test: install system-deps lint typecheck proto-check ## install everything, lint, type-check, check generated code, run all tests
	$(BIN)/pytest

test-fast: install ## only the tests, without lint and type checks
	$(BIN)/pytest -x
