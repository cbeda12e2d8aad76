# The front door. Every target a person types is the one CI runs; logic lives in the Python
# packages (runtime/, builder/, devtools/, bench/), never here.
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PG ?=
PYTEST_ARGS ?=
REGISTRY ?=
REPLICA ?=
HA ?=

.PHONY: help
help:  ## list the targets and where things live
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'
	@printf '\nWhere things live (README.md, "Layout"):\n'
	@printf '%s\n' \
	  "  extension/  the extension: runs in every backend (control, sql/, pg_session_jwt/)" \
	  "  images/     what ships: versions.yaml (the matrix), postgresql.yaml, Dockerfile, entrypoint" \
	  "  runtime/    Python run in the container before the server (config check, renderer)" \
	  "  builder/    the build host (python -m builder.build, builder.push)" \
	  "  deploy/     cnpg/: a CloudNativePG Cluster; patroni/: the Patroni node image (make run HA=1)" \
	  "  devtools/   token tool (python -m devtools.jwt), dev stack, dev issuer" \
	  "  bench/      benchmarks (python -m bench.run); targets in docs/benchmarks.md" \
	  "  tests/      mirrors the packages; tests/support/ is shared test code"

# What a target needs from the host (builder/prerequisites.py, run with the host's Python before
# .venv exists), checked before any work: installed with apt when this user can, else listed
# in one message with the command that installs it.
CHECKS := check-venv check-images check-image check-run check-test
.PHONY: $(CHECKS)
$(CHECKS): check-%:
	@$(PYTHON) -m builder.prerequisites $* $(if $(PG),--pg $(PG))

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -m builder.prerequisites venv
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --editable .
	touch $@

.PHONY: venv
venv: $(VENV)/.installed  ## create .venv from the pinned requirements

.PHONY: images
images: check-images venv  ## build every major in images/versions.yaml
	$(PY) -m builder.build

.PHONY: image
image: check-image venv  ## build one major: make image PG=17
	$(PY) -m builder.build --pg $(PG)

.PHONY: test
test: check-test images  ## build the images, then run unit and container tests for every major
	$(PY) -m pytest -m "not stress" $(PYTEST_ARGS)

.PHONY: stress
stress: images  ## load, fault and fuzzing tests (full size)
	$(PY) -m pytest -m stress $(PYTEST_ARGS)

.PHONY: bench
bench: images  ## benchmarks against their baselines (results in bench-results/)
	$(PY) -m bench.run $(BENCH_ARGS)

.PHONY: push
push: venv  ## push every tag of every major (or PG=17) to REGISTRY=host:port[/path]
	$(PY) -m builder.push --registry "$(REGISTRY)" $(if $(PG),--pg $(PG))

.PHONY: run
run: check-run venv  ## start the dev stack and print how to use it (PG=15: another major; REPLICA=1: a standby too; HA=1: Patroni)
	$(PY) -m devtools.devstack up $(if $(PG),--pg $(PG)) $(if $(REPLICA),--replica) $(if $(HA),--ha)

.PHONY: stop
stop: venv  ## stop the local development stack and remove its volumes
	$(PY) -m devtools.devstack down

.PHONY: logs
logs: venv  ## follow the development stack's logs
	$(PY) -m devtools.devstack logs

.PHONY: lint
lint: venv  ## ruff on the Python, bash -n on the shell scripts
	$(PY) -m ruff check runtime builder devtools bench tests extension examples
	for f in images/*.sh compose/*/*.sh deploy/*/*.sh bench/*/*.sh .ci/run; do bash -n "$$f" || exit 1; done

.PHONY: clean
clean:  ## remove the venv, test logs, bench results and this project's images
	rm -rf $(VENV) tests/logs bench-results .pytest_cache .ruff_cache *.egg-info
	-docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^pg-session-jwt(-base|-(dev|test)-[a-z]+|-bench-baseline)?:' | xargs -r docker rmi
