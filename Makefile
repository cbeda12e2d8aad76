# The front door. Every target a person types is the one CI runs; logic lives in scripts/.
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PG ?=
PYTEST_ARGS ?=
REGISTRY ?=
REPLICA ?=

.PHONY: help
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.installed  ## create .venv from the pinned requirements

.PHONY: images
images: venv  ## build every major in images/versions.yaml
	$(PY) -m scripts.build

.PHONY: image
image: venv  ## build one major: make image PG=17
	$(PY) -m scripts.build --pg $(PG)

.PHONY: test
test: images  ## build the images, then run unit and container tests for every major
	$(PY) -m pytest -m "not stress" $(PYTEST_ARGS)

.PHONY: stress
stress: images  ## load, fault and fuzzing tests (full size)
	$(PY) -m pytest -m stress $(PYTEST_ARGS)

.PHONY: bench
bench: images  ## benchmarks against their baselines (results in bench-results/)
	$(PY) -m scripts.bench $(BENCH_ARGS)

.PHONY: push
push: venv  ## push every tag of every major (or PG=17) to REGISTRY=host:port[/path]
	$(PY) -m scripts.push --registry "$(REGISTRY)" $(if $(PG),--pg $(PG))

.PHONY: run
run: venv  ## start the dev stack and print how to use it (PG=15: another major; REPLICA=1: a standby too)
	$(PY) -m scripts.devstack up $(if $(PG),--pg $(PG)) $(if $(REPLICA),--replica)

.PHONY: stop
stop: venv  ## stop the local development stack and remove its volumes
	$(PY) -m scripts.devstack down

.PHONY: logs
logs: venv  ## follow the development stack's logs
	$(PY) -m scripts.devstack logs

.PHONY: lint
lint: venv  ## ruff on the Python, bash -n on the shell scripts
	$(PY) -m ruff check scripts tests extension compose
	for f in images/*.sh compose/*/*.sh .ci/run; do bash -n "$$f" || exit 1; done

.PHONY: clean
clean:  ## remove the venv, test logs, bench results and this project's images
	rm -rf $(VENV) tests/logs bench-results .pytest_cache .ruff_cache
	-docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^pg-session-jwt(-base|-dev-[a-z]+|-bench-baseline)?:' | xargs -r docker rmi
