# candlecast: every set-up step lives here, so a fresh Debian 12 machine needs only `make demo` / `make test`.
# Targets are idempotent: a second run finds everything in place and changes nothing.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VENV_DBT := .venv-dbt
PY := $(VENV)/bin/python
LOCAL := $(CURDIR)/.local
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PIP_FLAGS := --disable-pip-version-check --quiet

# Local defaults for every component; any of them can be overridden from the environment.
export CANDLECAST_LOCAL_DIR ?= $(LOCAL)
export DBT_PROFILES_DIR := $(CURDIR)
export DBT_SEND_ANONYMOUS_USAGE_STATS := False
# Runs a command as one database role (`$(RUN) loader ...`): the connection env vars, taking the local server's
# generated file as the default, with that role's password only (candlecast.role_env).
RUN := $(PY) -m candlecast.withenv

.PHONY: test-celery help deps system-deps venvs db-start db-stop db-status demo test test-db-stop test-unit lint bench soak \
        dbt-parse dbt-build docs docs-serve airflow airflow-stop airflow-backfill pg-start pg-stop pg-status clean serve

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# --- set-up -------------------------------------------------------------------------------------

deps: system-deps venvs  ## install what is missing: mariadb-server, postgresql, redis-server, chromium, wrk and both virtualenvs

system-deps:
	@if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then \
	  echo "installing Debian's mariadb-server"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends mariadb-server mariadb-client >/dev/null; \
	fi
	@# Debian's PostgreSQL: Airflow's metadata database (candlecast.postgres runs it; Debian's own cluster is not used).
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
	  echo "installing Debian's postgresql"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	fi
	@# Debian's redis-server: Celery's broker for `make airflow EXECUTOR=celery` (candlecast.redis_local runs it).
	@if ! command -v redis-server >/dev/null; then \
	  echo "installing Debian's redis-server"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends redis-server >/dev/null; \
	fi
	@# Debian's chromium for the dashboard's browser test (Playwright drives it; its own browser download is not
	@# used), wrk for the API benchmark.
	@if ! command -v chromium >/dev/null || ! command -v wrk >/dev/null; then \
	  echo "installing Debian's chromium and wrk"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium wrk >/dev/null; \
	fi

venvs: $(VENV)/.installed $(VENV_DBT)/.installed

$(VENV)/.installed: requirements/project.lock requirements/project.txt pyproject.toml
	@echo "setting up $(VENV) (Airflow, Cosmos, LightGBM, ...)"
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install $(PIP_FLAGS) -c requirements/project.lock -r requirements/project.txt
	@$(PY) -m pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e . 2>/dev/null \
	  || $(PY) -m pip install $(PIP_FLAGS) --no-deps -e .
	@touch $@

$(VENV_DBT)/.installed: requirements/dbt.lock requirements/dbt.txt
	@echo "setting up $(VENV_DBT) (dbt-core 1.7 + dbt-mysql 1.7.0)"
	@[ -x $(VENV_DBT)/bin/python ] || $(PYTHON) -m venv $(VENV_DBT)
	@$(VENV_DBT)/bin/python -m pip install $(PIP_FLAGS) -c requirements/dbt.lock -r requirements/dbt.txt
	@touch $@

# --- the project's MariaDB ----------------------------------------------------------------------

db-start: deps  ## start the project's MariaDB (127.0.0.1:$CANDLECAST_DB_PORT, default 3407)
	@$(PY) -m candlecast.mariadb start

db-stop:  ## stop the project's MariaDB
	@$(PY) -m candlecast.mariadb stop

db-status:  ## is the project's MariaDB running?
	@$(PY) -m candlecast.mariadb status

# --- the two commands ---------------------------------------------------------------------------

demo: db-start  ## run the whole offline pipeline on the bundled real data and say where the results are
	@$(PY) -m demo

# Two workers, one test directory at a time each (tests/conftest.py); TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2

test: deps  ## the whole test suite (starts its own MariaDB on port 3408 under .local/test)
	@$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder)

test-db-stop:  ## stop the tests' own MariaDB (port 3408), PostgreSQL (port 5408) and Redis (6408), .local/test
	@CANDLECAST_LOCAL_DIR=$(LOCAL)/test CANDLECAST_DB_PORT=$${CANDLECAST_TEST_DB_PORT:-3408} $(PY) -m candlecast.mariadb stop
	@CANDLECAST_LOCAL_DIR=$(LOCAL)/test CANDLECAST_PG_PORT=$${CANDLECAST_TEST_PG_PORT:-5408} $(PY) -m candlecast.postgres stop
	@CANDLECAST_LOCAL_DIR=$(LOCAL)/test CANDLECAST_REDIS_PORT=$${CANDLECAST_TEST_REDIS_PORT:-6408} $(PY) -m candlecast.redis_local stop

test-unit: deps  ## fast tests only
	@$(PY) -m pytest -m "not integration"

lint: $(VENV)/.installed  ## ruff, then mypy over the project's packages ([tool.mypy] in pyproject.toml; cache in .mypy_cache)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy

bench: db-start  ## every benchmark but the fortnight's soak (`make soak`); prints figure and target (~40 min)
	@for b in bench/bench_*.py; do [ "$$b" = bench/bench_soak.py ] && continue; echo "== $$b"; $(PY) $$b; done

# The benchmark's run checks what tests/soak asserts (tools.soak.run.verdicts) and exits 1 if any fails.
soak: deps  ## the replayed fortnight: 336 hourly cycles through every fault, 24 via Airflow (80 to 100 min on a quiet machine)
	@$(PY) bench/bench_soak.py

clean:  ## remove caches (keeps .local data; `make airflow-stop pg-stop db-stop && rm -rf .local` for a clean slate)
	rm -rf .pytest_cache .ruff_cache .mypy_cache dbt_project/target dbt_project/logs

# --- serving: the read API and dashboard (serve/) ------------------------------------------------
# As the reader role (it can only SELECT the marts), on CANDLECAST_API_HOST:CANDLECAST_API_PORT (127.0.0.1:8090).

serve: db-start  ## the read API and dashboard on http://127.0.0.1:8090/ (API docs /docs) until Ctrl-C
	@$(RUN) reader $(PY) -m serve

# --- orchestration: the local Airflow (dags/) --------------------------------------------------
# Airflow standalone (scheduler, DAG processor, triggerer, API server + UI) with AIRFLOW_HOME under
# .local/airflow, its metadata in the project's PostgreSQL (127.0.0.1:$CANDLECAST_PG_PORT, 5407, data under
# .local/postgres), LocalExecutor with 4 slots, on 127.0.0.1:$CANDLECAST_AIRFLOW_PORT (8080).
# Each role's login becomes an Airflow Connection (candlecast_<role>, never the admin); Airflow itself holds no
# password, so a task holds its step's role only and dbt under Cosmos the transformer's (see README, Security).
# OFFLINE=1: the replay server too (127.0.0.1:$CANDLECAST_REPLAY_PORT, 8765), the DAGs pointed at it, bounded to
# its data and paused.
# EXECUTOR=celery WORKERS=2: the CeleryExecutor (candlecast.airflow_celery in standalone's place) with that many
# workers, each with its own local folder (.local/workers/worker-N), the project's Redis as broker
# (127.0.0.1:$CANDLECAST_REDIS_PORT, 6407); QUEUES="retrain hourly" gives worker 1 the queue `retrain`, worker 2
# `hourly` (CANDLECAST_RETRAIN_QUEUE / CANDLECAST_HOURLY_QUEUE send each DAG's tasks there).

airflow: db-start dbt-parse  ## start the local Airflow in the background (OFFLINE=1: on the replay server; EXECUTOR=celery WORKERS=2); prints its URL
	@$(if $(EXECUTOR),CANDLECAST_AIRFLOW_EXECUTOR=$(EXECUTOR)) $(if $(WORKERS),CANDLECAST_AIRFLOW_WORKERS=$(WORKERS)) \
	  $(if $(QUEUES),CANDLECAST_WORKER_QUEUES="$(QUEUES)") \
	  $(PY) -m candlecast.airflow_local start $(if $(OFFLINE),--offline)

test-celery: deps  ## the CeleryExecutor test (two Airflow instances in turn, several minutes): not part of `make test`
	@CANDLECAST_CELERY_TEST=1 $(PY) -m pytest tests/celery -v

airflow-stop:  ## stop the Airflow that `make airflow` started (and its replay server); PostgreSQL keeps running
	@$(PY) -m candlecast.airflow_local stop

airflow-backfill:  ## run hours through the running Airflow: FROM=2024-01-09T20:00 TO=2024-01-09T22:00 (interval starts)
	@[ -n "$(FROM)" ] && [ -n "$(TO)" ] || { echo "usage: make airflow-backfill FROM=2024-01-09T20:00 TO=2024-01-09T22:00 [DAG=...]" >&2; exit 2; }
	@$(PY) -m candlecast.airflow_local backfill --from "$(FROM)" --to "$(TO)" $(if $(DAG),--dag "$(DAG)") $(if $(REPROCESS),--reprocess "$(REPROCESS)")

pg-start: deps  ## start the project's PostgreSQL, Airflow's metadata DB (127.0.0.1:$CANDLECAST_PG_PORT, default 5407)
	@$(PY) -m candlecast.postgres start

pg-stop:  ## stop the project's PostgreSQL (stop Airflow first)
	@$(PY) -m candlecast.postgres stop

pg-status:  ## is the project's PostgreSQL running?
	@$(PY) -m candlecast.postgres status

# The same steps without Airflow (cycle/): what a crontab line runs. END is the interval's end (default: the
# current hour); START runs every hour from there; WEEKLY=1 the retrain.
.PHONY: cycle

cycle: db-start  ## one hourly cycle without Airflow (END=2024-01-08T13:00, START=... for a range, WEEKLY=1)
	@$(PY) -m cycle $(if $(END),--end "$(END)") $(if $(START),--start "$(START)") $(if $(WEEKLY),--weekly)

# --- extract: Coinbase candles and the offline replay server (extract/) --------------------------
# The extractor reads COINBASE_API_URL (default: the real Coinbase Exchange API). Offline, run `make replay`
# in one shell and `export COINBASE_API_URL=http://127.0.0.1:8765` in another (`make airflow OFFLINE=1` starts
# its own in the background).

.PHONY: replay extract-backfill extract-incremental

REPLAY_PORT ?= 8765

replay: deps  ## serve the bundled candles as the Coinbase API on 127.0.0.1:$REPLAY_PORT (8765) until Ctrl-C
	@$(PY) -m tools.replay --port $(REPLAY_PORT)

extract-backfill: db-start  ## fetch START..END (UTC, ISO 8601) into raw: make extract-backfill START=2021-12-14 END=2024-01-10
	@[ -n "$(START)" ] && [ -n "$(END)" ] || { echo "usage: make extract-backfill START=2021-12-14 END=2024-01-10" >&2; exit 2; }
	@$(RUN) loader $(PY) -m extract backfill --start "$(START)" --end "$(END)"

extract-incremental: db-start  ## catch every product up to the last closed hour (or END=...)
	@$(RUN) loader $(PY) -m extract incremental $(if $(END),--end "$(END)")

# --- dbt: the feature layer (dbt_project/) -------------------------------------------------------
# dbt runs through candlecast.dbt_runner (the one way the project starts dbt): the dbt of
# CANDLECAST_DBT_EXECUTABLE (default .venv-dbt/bin/dbt) on dbt_project/ with profiles.yml, whose env_var()
# calls get the connection settings (env vars win over the local credentials file). Pass extra dbt flags
# with DBT_FLAGS, e.g. `make dbt-build DBT_FLAGS=--full-refresh` after a change to a model's columns.

DBT := $(PY) -m candlecast.dbt_runner
DBT_FLAGS ?=
DOCS_PORT ?= 8580

dbt-parse: venvs  ## parse the dbt project into dbt_project/target/manifest.json (Cosmos reads it; no database)
	@$(DBT) --quiet parse && echo "dbt manifest: dbt_project/target/manifest.json"

dbt-build: db-start  ## dbt build (models + tests) and source freshness on the project's MariaDB
	@$(DBT) build $(DBT_FLAGS)
	@$(DBT) source freshness

docs: db-start  ## dbt docs generate: dbt_project/target/{index.html,manifest.json,catalog.json}
	@$(DBT) docs generate

docs-serve: docs  ## serve the dbt docs on http://127.0.0.1:$DOCS_PORT (8580) until Ctrl-C
	@$(DBT) docs serve --host 127.0.0.1 --port $(DOCS_PORT) --no-browser

# --- ml: training, promotion, inference, backtest (ml/) ------------------------------------------
# Times come from the data (the newest hour of the feature mart) unless given: `python -m ml <cmd> --help`.
# The model store is CANDLECAST_MODEL_STORE (default .local/models).

.PHONY: ml-train ml-promote ml-predict backtest

ml-train: db-start  ## train LightGBM + baselines, cutoff = newest hour - CANDLECAST_HOLDOUT_HOURS (168)
	@$(RUN) ml $(PY) -m ml train

ml-promote: db-start  ## score every stored model on the holdout; the lowest MAE serves (persistence competes)
	@$(RUN) ml $(PY) -m ml promote

ml-predict: db-start  ## forecasts from the newest LAST feature hours (default 48) with the production model
	@$(RUN) ml $(PY) -m ml predict --last $(or $(LAST),48)

backtest: db-start  ## walk-forward backtest over the last WEEKS weeks (52): metrics vs persistence + PNG chart
	@$(RUN) ml $(PY) -m ml backtest --weeks $(or $(WEEKS),52)

# --- containers (containers/): the project image and the compose file -----------------------------------------
# Not part of `make test` (building takes minutes); tests/foundation/test_container_files.py checks the files.
# `make image` installs Debian's podman, buildah, runc and debootstrap if missing (and podman-compose 1.0.6 from PyPI
# under .local: Debian's 1.0.3 mishandles the host network), bootstraps a Debian 12 base image from Debian's
# packages when none is there (no registry needed), and builds the project image.
# `make compose-up` also makes the secrets (once, outside the repo) and starts every service, waiting until
# healthy. COMPOSE_OFFLINE=1 adds the replay server as the Coinbase API; COMPOSE_HOSTNET=1 runs every service
# on the host's network bound to 127.0.0.1 (machines where containers get no network of their own).
.PHONY: container-deps image compose-secrets compose-up compose-down compose-ps

IMAGE ?= localhost/candlecast:latest
BASE_IMAGE ?= localhost/candlecast-debian:bookworm
# The CA bundle pip trusts during the build (the host's: it also holds a TLS-inspecting proxy's CA, where one is)
BUILD_CA ?= $(or $(wildcard $(REQUESTS_CA_BUNDLE)),/etc/ssl/certs/ca-certificates.crt)
CANDLECAST_SECRETS_DIR ?= $(HOME)/.config/candlecast/compose-secrets
COMPOSE_PROJECT ?= candlecast
COMPOSE_FILES := -f containers/compose.yaml $(if $(COMPOSE_OFFLINE),-f containers/compose.offline.yaml) \
  $(if $(COMPOSE_HOSTNET),-f containers/compose.hostnet.yaml) \
  $(if $(and $(COMPOSE_OFFLINE),$(COMPOSE_HOSTNET)),-f containers/compose.offline.hostnet.yaml)
PODMAN_COMPOSE := $(LOCAL)/containers/podman-compose/bin/podman-compose
# Podman's settings for these targets (containers/podman-conf.sh writes them): runc, and ulimits this host allows.
PODMAN_CONF := $(LOCAL)/containers/containers.conf
export CONTAINERS_CONF := $(PODMAN_CONF)
COMPOSE := CANDLECAST_SECRETS_DIR=$(CANDLECAST_SECRETS_DIR) CANDLECAST_IMAGE=$(IMAGE) \
  $(if $(COMPOSE_HOSTNET),CANDLECAST_COMPOSE_BIND=127.0.0.1 CANDLECAST_COMPOSE_REPLAY_PORT=$${CANDLECAST_HOSTNET_REPLAY_PORT:-18765}) \
  $(PODMAN_COMPOSE) -p $(COMPOSE_PROJECT) $(COMPOSE_FILES)

container-deps: $(PODMAN_COMPOSE)
	@if ! command -v podman >/dev/null || ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null \
	    || ! command -v runc >/dev/null; then \
	  echo "installing Debian's podman, buildah, runc and debootstrap"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq podman buildah runc debootstrap >/dev/null; \
	fi
	@bash containers/podman-conf.sh $(PODMAN_CONF)

$(PODMAN_COMPOSE): requirements/containers.txt
	@echo "setting up podman-compose in $(LOCAL)/containers/podman-compose (requirements/containers.txt)"
	@[ -x $(LOCAL)/containers/podman-compose/bin/python ] || $(PYTHON) -m venv $(LOCAL)/containers/podman-compose
	@$(LOCAL)/containers/podman-compose/bin/pip install $(PIP_FLAGS) -r requirements/containers.txt
	@touch $@

image: container-deps  ## the project image $(IMAGE) (bootstraps a Debian base image first if there is none)
	@$(SUDO) bash containers/debian-base.sh $(BASE_IMAGE)
	@echo "building $(IMAGE) from containers/Containerfile"
	@$(SUDO) podman build --network host --build-arg BASE_IMAGE=$(BASE_IMAGE) --secret id=build-ca,src=$(BUILD_CA) \
	  -t $(IMAGE) -f containers/Containerfile .

compose-secrets:  ## create the compose file's secrets that are missing, in $CANDLECAST_SECRETS_DIR (0600, outside the repo)
	@python3 -m candlecast.container secrets "$(CANDLECAST_SECRETS_DIR)"

compose-up: image compose-secrets  ## every service in containers (COMPOSE_OFFLINE=1, COMPOSE_HOSTNET=1), until healthy
	@$(SUDO) $(COMPOSE) up -d
	@$(SUDO) bash containers/compose-wait.sh $(COMPOSE_PROJECT)

compose-down: container-deps  ## stop and remove the containers (volumes are kept; `podman volume rm` them for a clean slate)
	@$(SUDO) $(COMPOSE) down

compose-ps: container-deps  ## the compose services and their state
	@$(SUDO) podman ps -a --filter label=com.docker.compose.project=$(COMPOSE_PROJECT)
