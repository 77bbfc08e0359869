# annlab: `make run` and `make test` are the only set-up commands a newcomer needs; every
# target installs what it uses into .venv on first use (re-done when the lock file changes).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY ?= $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
EXPERIMENT ?= figure2
RUN_ID ?=
# Paths come from conf/paths/default.yaml (the one place they are decided).
PATHS = $(shell $(PY) -m annlab.paths $(1))
UI_PORT ?= 5000
SERVE_PORT ?= 5002
# Where a sweep's or a study's jobs run: joblib (this machine's cores), basic (one process) or
# ray ($RAY_ADDRESS's cluster, else a local Ray instance kept on 127.0.0.1).
LAUNCHER ?= joblib
# A Ray driver authenticates with the cluster's token, as `make cluster` starts its nodes.
RUN_JOBS = $(if $(filter ray,$(LAUNCHER)),RAY_AUTH_MODE=$${RAY_AUTH_MODE:-token} $(if \
  $(RAY_ADDRESS),,RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ))$(PY) \
  -m pipelines.run hydra/launcher=$(if $(filter ray,$(LAUNCHER)),annlab_ray,$(LAUNCHER))
# `make server`'s settings are read from the command line only (HOST and PORT are common
# environment variables that must not move a server by accident): $(call cli,NAME,default).
cli = $(if $(filter command line,$(origin $(1))),$($(1)),$(2))
# What is given to make reaches the command as typed: each word of ARGS (split at spaces) and
# RUN_ID and MODEL single-quoted, so the shell expands nothing in them (globs, braces, `...`).
quote = '$(subst ','\'',$(1))'
quoted = $(foreach w,$(1),$(call quote,$(w)))

.PHONY: help install run data sweep tune ui server cluster cluster-worker figures docs reproduce \
  register serve test test-fast bench lint lock clean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Several targets started at once (two terminals, a script) may all find .venv missing or stale:
# one installs under the lock, the others wait for it and find the stamp fresh.
$(STAMP): requirements.lock pyproject.toml
	@flock $(VENV).lock $(SHELL) -c 'test $@ -nt requirements.lock -a $@ -nt pyproject.toml \
	  && exit 0; set -ex; test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock; \
	  $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .; touch $@'

install: $(STAMP)  ## create .venv from the lock file (done by every target on first use)

run: $(STAMP)  ## one experiment, default config; Hydra overrides in ARGS='key=value ...'
	@$(PY) -m pipelines.run $(call quoted,$(ARGS))

data: $(STAMP)  ## a dataset's splits as three CSV files (ARGS='data=iris'), to train from with data=file
	@$(PY) -m pipelines.data $(call quoted,$(ARGS))

sweep: $(STAMP)  ## grid over activation x hidden nodes x learning rate, jobs in parallel (LAUNCHER=)
	@$(RUN_JOBS) sweep=default $(call quoted,$(ARGS))

tune: $(STAMP)  ## an Optuna study over conf/tune/default.yaml's space, pruning from the curves
	@$(RUN_JOBS) tune=default $(call quoted,$(ARGS))

ui: $(STAMP)  ## MLflow UI over the same store, on 127.0.0.1 only (UI_PORT=5000); prints its link
	@$(PY) -m pipelines.ui --port $(call quote,$(UI_PORT))

server: $(STAMP)  ## MLflow tracking server: DB=<SQLAlchemy URL> HOST PORT ARTIFACTS=<dir> AUTH=1
	@$(PY) -m pipelines.server --host $(call quote,$(call cli,HOST,127.0.0.1)) --port $(call quote,$(call cli,PORT,5000)) \
	  $(if $(call cli,DB,),--db $(call quote,$(DB))) $(if $(call cli,ARTIFACTS,),--artifacts $(call quote,$(ARTIFACTS))) \
	  $(if $(filter 1,$(call cli,AUTH,)),--auth)

figures: $(STAMP)  ## rebuild the post's Figures 2 and 3 from conf/experiment/$(EXPERIMENT).yaml
	@$(PY) -m pipelines.figures $(call quote,experiment=$(EXPERIMENT)) $(call quoted,$(ARGS))

docs: $(STAMP)  ## rebuild the README's figures in docs/ (checked by the tests)
	@$(PY) -m pipelines.docs experiment=figure2

reproduce: $(STAMP)  ## rerun a tracked run (RUN_ID=...) and compare everything
	@test -n $(call quote,$(RUN_ID)) || { echo "usage: make reproduce RUN_ID=<mlflow run id>" >&2; exit 2; }
	@$(PY) -m pipelines.reproduce $(call quote,$(RUN_ID)) $(call quoted,$(ARGS))

register: $(STAMP)  ## a tracked run's model (RUN_ID=...) into the registry; champion if best
	@test -n $(call quote,$(RUN_ID)) || { echo "usage: make register RUN_ID=<mlflow run id>" >&2; exit 2; }
	@$(PY) -m pipelines.register $(call quote,$(RUN_ID))

serve: $(STAMP)  ## MLflow's scoring server for a champion (MODEL=annlab-moons; or RUN_ID=...), on 127.0.0.1
	@$(PY) -m pipelines.serve --port $(call quote,$(SERVE_PORT)) \
	  $(if $(call cli,MODEL,),--model $(call quote,$(MODEL))) $(if $(RUN_ID),--run-id $(call quote,$(RUN_ID)))

cluster: $(STAMP)  ## a Ray head node for LAUNCHER=ray: token auth, no usage stats, fixed ports (NODE_IP=)
	@$(PY) -m pipelines.cluster head --node-ip $(call quote,$(call cli,NODE_IP,127.0.0.1))

cluster-worker: $(STAMP)  ## a Ray worker node joining RAY_ADDRESS=<head>:6379 (NODE_IP=<this machine>)
	@test -n $(call quote,$(RAY_ADDRESS)) || { echo "usage: RAY_ADDRESS=<head>:6379 make cluster-worker NODE_IP=<ip>" >&2; exit 2; }
	@$(PY) -m pipelines.cluster worker --address $(call quote,$(RAY_ADDRESS)) --node-ip $(call quote,$(call cli,NODE_IP,127.0.0.1))

test: $(STAMP)  ## the whole suite, tests/unit/ and tests/e2e/: what CI runs
	$(PY) -m pytest -n 2 --dist worksteal tests $(call quoted,$(ARGS))

test-fast: $(STAMP)  ## tests/unit/ only (no subprocess, server or CLI), under a minute
	$(PY) -m pytest -n 2 tests/unit $(call quoted,$(ARGS))

bench: $(STAMP)  ## benchmarks, printed as ratios against their baselines
	$(PY) bench/bench.py $(call quoted,$(ARGS))

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check .

lock:  ## re-resolve requirements.lock from pyproject.toml (needs the registry)
	rm -rf /tmp/annlab-lock && $(PYTHON) -m venv /tmp/annlab-lock
	/tmp/annlab-lock/bin/pip install --quiet --disable-pip-version-check '.[dev,cluster]'
	@# joblib 1.6 needs cloudpickle>=3, hydra-ray-launcher pins <3: joblib wins (lock header)
	/tmp/annlab-lock/bin/pip install --quiet --disable-pip-version-check --upgrade joblib
	{ sed -n '/^#/!q;p' requirements.lock; /tmp/annlab-lock/bin/pip freeze --exclude-editable \
	  | grep -v '^annlab'; } > requirements.lock.new && mv requirements.lock.new requirements.lock

clean: $(STAMP)  ## remove generated outputs (keeps the MLflow store)
	rm -rf $(call PATHS,runs multiruns figures)
