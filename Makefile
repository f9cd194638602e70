# OCA: the two commands are `make run` (serve a sample cache on loopback) and `make test`.
# Both work from a fresh clone: they create .venv and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages the tests and benchmarks drive for real (command:package); chromium and ffmpeg are the
# player tests' browser and decoder (Debian's chromium plays H.264/AAC); promtool checks the alert rules;
# postgresql: the server binaries (/usr/lib/postgresql/N/bin/initdb, pg_ctl) the control plane's PostgreSQL
# store tests start a throwaway cluster with (tests/postgres.py), and the lab its own with --control-replicas N;
# pg_ctlcluster comes with them. haproxy: the load balancer in front of the lab's control-plane replicas
SYSTEM_TOOLS := nginx:nginx wrk:wrk strace:strace systemd-analyze:systemd /usr/bin/chromium:chromium \
	/usr/bin/ffmpeg:ffmpeg /usr/bin/promtool:prometheus pg_ctlcluster:postgresql haproxy:haproxy
# `make lab CONTROL_REPLICAS=2`: two control-plane replicas on the lab's PostgreSQL behind HAProxy
CONTROL_REPLICAS ?= 1

.PHONY: test run lab loadtest lint typecheck unit bench faults system-deps clean deb package-test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# the browser players (hls.js, dashjs) pinned by package.json / package-lock.json; never committed
node_modules: package.json $(wildcard package-lock.json)
	@scripts/install-system-deps.sh npm:npm
	if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
	touch node_modules

system-deps:
	@scripts/install-system-deps.sh $(SYSTEM_TOOLS)

# ruff, then the import contracts in pyproject.toml (which program may import which: import-linter)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# benchmarks' timed runs (marker `bench`) are not tests of behaviour: `make bench` runs them, `make test` does not
unit: $(STAMP)
	$(BIN)/pytest -q -m "not package and not bench"

test: $(STAMP) system-deps node_modules lint typecheck
	$(BIN)/pytest -q -m "not package and not bench"

# the Debian package: build/oca_<version>_<arch>.deb (dpkg-deb from a staged tree; scripts/build-deb.sh)
deb: $(STAMP)
	PYTHON=$(BIN)/python scripts/build-deb.sh build

# builds the package and installs it into a clean Debian root (debootstrap, cached in build/debroot-cache/)
# exactly as README's install sections say; root only (it skips and says why otherwise). .ci/run runs it
package-test: $(STAMP)
	@scripts/install-system-deps.sh debootstrap:debootstrap
	$(BIN)/pytest -q -rs -m package tests/package

# `make run PORT=8080 ADMIN_PORT=8081`: the sample box's ports on 127.0.0.1
PORT ?= 8080
ADMIN_PORT ?= 8081
run: $(STAMP)
	$(BIN)/oca sample run --port $(PORT) --admin-port $(ADMIN_PORT)

lab: $(STAMP) node_modules
	@scripts/install-system-deps.sh /usr/bin/ffmpeg:ffmpeg \
		$(if $(filter-out 1,$(CONTROL_REPLICAS)),pg_ctlcluster:postgresql haproxy:haproxy)
	$(BIN)/oca lab up --control-replicas $(CONTROL_REPLICAS)

# players (locust devices) against a lab of its own: USERS=200 DURATION=60s by default; HTML + CSV in out/
# (the run ends by printing their paths); the first run encodes 3 titles of 90 s (about 2.5 min on 2 cores)
USERS ?= 200
DURATION ?= 60s
loadtest: $(STAMP) node_modules
	@scripts/install-system-deps.sh /usr/bin/ffmpeg:ffmpeg
	$(BIN)/python -m loadtest.devices_run --users $(USERS) --duration $(DURATION)

bench: $(STAMP) system-deps
	$(BIN)/python -m loadtest.bench --quick --json out.json
	$(BIN)/pytest -q -m bench

# every fault scenario against real processes (box, origin, control plane, lab): one table, exit 1 if a row
# fails; FAULTS_ARGS=--quick for the 3-minute subset, FAULTS_ARGS='--scenario eio' for one
FAULTS_ARGS ?=
faults: $(STAMP)
	$(BIN)/python -m loadtest.faults $(FAULTS_ARGS) --json faults.json

clean:
	rm -rf $(VENV) node_modules run build *.egg-info .pytest_cache .mypy_cache .ruff_cache
