# Everything a newcomer or CI needs: each target installs what it uses into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# The IDE's pinned scripts and the GraphQL over HTTP audit (package.json), when npm exists.
ASSETS := node_modules/.installed-$(shell cksum package-lock.json | cut -d' ' -f1)
# The reference services sign their change events with this; the gateway checks it.
EVENT_SECRET ?= dev-event-secret-change-me-0123456789abcdef

.PHONY: venv assets schema run services gateway test check fuzz lint bench bench-resilience bench-redis bench-tracing bench-defer bench-barrier bench-history bench-client soak trace token settings-doc clean bench-subscriptions bench-mutations

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the Python packages into $(VENV) (log: $(VENV)/install.log)"
	@# The build backend's warnings are noise on a first run: shown only when it fails.
	@{ $(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip \
	   && $(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'; \
	 } > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

$(ASSETS): package.json package-lock.json
	@if command -v npm >/dev/null; then \
	  npm ci --no-audit --no-fund --loglevel=error && touch $@ \
	    || echo "npm ci failed: the IDE will load its scripts from a CDN (internet needed)"; \
	else \
	  echo "npm not found: the IDE will load its scripts from a CDN (internet needed)," \
	       "and the GraphQL over HTTP audit cannot run"; \
	fi

assets: $(ASSETS)

# The six reference services on 8001-8006, the authorization server on 8007 and the gateway
# on 8000 (checking tokens through the server's JWKS: config/development.toml); Ctrl-C stops
# them all.
run: $(STAMP) $(ASSETS)
	@EVENT_WEBHOOKS=http://127.0.0.1:8000/events EVENT_SECRET=$(EVENT_SECRET) \
	  $(PY) -m services & svc=$$!; \
	GATEWAY_SETTINGS_FILE=$${GATEWAY_SETTINGS_FILE:-config/development.toml} \
	  EVENT_SECRET=$(EVENT_SECRET) $(PY) -m app & gw=$$!; \
	trap 'kill -INT $$svc $$gw 2>/dev/null; wait; exit 0' INT TERM; \
	wait -n $$svc $$gw; kill -INT $$svc $$gw 2>/dev/null; wait

services: $(STAMP)
	EVENT_WEBHOOKS=http://127.0.0.1:8000/events EVENT_SECRET=$(EVENT_SECRET) $(PY) -m services

gateway: $(STAMP) $(ASSETS)
	GATEWAY_SETTINGS_FILE=$${GATEWAY_SETTINGS_FILE:-config/development.toml} \
	  EVENT_SECRET=$(EVENT_SECRET) $(PY) -m app

test: $(STAMP) $(ASSETS) check
	$(PY) -m pytest

# The static checks: lint, the import direction between layers (pyproject.toml), types.
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The differential test of the two executors (tests/gateway/test_executor.py) with many more
# generated queries than make test's 500, drawn at random each run (not derandomized):
# make fuzz FUZZ_EXAMPLES=100000. About 8 s per 100 examples on 2 cores.
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -s \
	  tests/gateway/test_executor.py::test_both_executors_answer_generated_queries_alike

# The benchmark matrix, the idle penalty, the cross-replica invalidation time (one Redis and a
# Redis Cluster), the cache's Redis level on both, and scale-out (about 5 minutes): writes
# bench/RESULTS.md and the JSON files beside it.
bench: $(STAMP)
	$(PY) -m bench.run --profile
	$(PY) -m bench.idle
	$(PY) -m bench.invalidation
	$(PY) -m bench.redis_levels
	$(PY) -m bench.scaleout

# Subscriptions over graphql-transport-ws and SSE (about 2 minutes): fan-out to 1,000
# subscribers on one gateway core, CPU per message, paced delivery latency, memory per idle
# subscription, 5,000 clients subscribing at once. Writes the Subscriptions section of
# bench/RESULTS.md and bench/subscriptions.json.
bench-subscriptions: $(STAMP)
	$(PY) -m bench.subscriptions

# The deep query under injected faults, and the load an outage sees (about 2 minutes):
# writes the Resilience section of bench/RESULTS.md and bench/resilience.json.
bench-resilience: $(STAMP)
	$(PY) -m bench.resilience

# Product queries with Redis stopped (SIGSTOP) against a gateway without Redis (~1 minute):
# writes the Redis stalled section of bench/RESULTS.md and bench/redis_stall.json.
bench-redis: $(STAMP)
	$(PY) -m bench.redis_stall

# What tracing costs: the deep query with tracing off, resolver spans, every field (~3 min):
# writes the Tracing section of bench/RESULTS.md and bench/tracing.json.
bench-tracing: $(STAMP)
	$(PY) -m bench.tracing

# The consistency guarantees over a long history (tests/history): 60 s of history and two
# pub/sub kills by default, about 90 s in all; more with HISTORY="--seconds 300 --callers 4",
# an earlier commit's replicas with HISTORY="--base REV". Writes the History checker section
# of bench/RESULTS.md and bench/history.json.
HISTORY ?=
# The plan executor without a level barrier against the commit before it (with one), and
# the floor app (no GraphQL) in the same turns.
bench-barrier: $(STAMP)
	$(PY) -m bench.barrier --base 3cfee5b --floor

# Gateway CPU per request on small queries (issue 19) against an earlier commit, in turns in
# one run with the floors under each workload (bench/floor_app.py; about 8 minutes): writes
# the CPU per request section of bench/RESULTS.md.
SPEED_BASE ?= c9450c9
bench-speed: $(STAMP)
	$(PY) -m bench.speed --base $(SPEED_BASE) --floor --floor-reqwest --floor-graphql

bench-history: $(STAMP)
	$(PY) -m bench.history $(HISTORY)

# The client's CPU per upstream call, aiohttp against pyreqwest, raw and behind UpstreamClient
# (about 1.5 minutes), then the gateway under other uvicorn settings and with pyreqwest (about
# 4 minutes): write the Upstream client and server settings section of bench/RESULTS.md.
bench-client: $(STAMP)
	$(PY) -m bench.upstream_client
	$(PY) -m bench.server_settings

# Gateway CPU per mutation (addReview) with the plan executor against graphql-core's, and
# the same selection as a query, in turns in one run (about 4 minutes): writes the Mutations
# through the plan section of bench/RESULTS.md and bench/mutations.json.
bench-mutations: $(STAMP)
	$(PY) -m bench.mutations

# The product page with deferred recommendations: time to the first part against the whole
# page; writes the Incremental delivery section of bench/RESULTS.md and bench/defer.json.
bench-defer: $(STAMP)
	$(PY) -m bench.defer

# The waterfall of a query against the running gateway: make trace QUERY=bench/queries/deep.graphql
QUERY ?= bench/queries/deep.graphql
trace: $(STAMP)
	$(PY) -m app trace $(QUERY)

# An access token from the authorization server (`make run` or `make services` running), by
# the client credentials grant of a seed API client (README: For third-party developers):
# make token CLIENT=bigcorp CLIENT_SECRET=... SCOPE="read:catalog"; no SCOPE: all it may have.
# A seed user's (the authorization code flow with PKCE, signed in for them): make token USER_ID=u65
CLIENT ?= acme-shop
CLIENT_SECRET ?= acme-shop-secret-0123456789abcdef012345
SCOPE ?=
USER_ID ?=
token: $(STAMP)
	@GATEWAY_SETTINGS_FILE=$${GATEWAY_SETTINGS_FILE:-config/development.toml} \
	  $(PY) -m app token $(if $(USER_ID),--user "$(USER_ID)",--client "$(CLIENT)" \
	  --client-secret "$(CLIENT_SECRET)") --scope "$(SCOPE)"

# Ten minutes at concurrency 32, watching the gateway's memory (bench/RESULTS.md, Soak).
soak: $(STAMP)
	$(PY) -m bench.soak --minutes 10

# The served schema's SDL (with its cache hints), checked in as schema/schema.graphql.
schema: $(STAMP)
	$(PY) -m app schema

# Regenerate the README's table of settings from app/config/settings.py.
settings-doc: $(STAMP)
	$(PY) -c "from pathlib import Path; from app.config.settings import readme_with_table as r; p = Path('README.md'); p.write_text(r(p.read_text()))"

lint: check

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
