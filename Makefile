# retrainer: the two commands are `make run` and `make test`; everything else is a helper.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
DATE ?= 2013-06-01
CONF ?= {}
WORKLOAD ?= flight_delay
MLFLOW_PORT ?= 5000
AIRFLOW_PORT ?= 8080

# Embedded single-machine defaults, all under the project folder (override any of them).
export RETRAINER_HOME ?= $(CURDIR)
export RETRAINER_DATA_ROOT ?= $(CURDIR)/data
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/.mlflow/mlflow.db
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export AIRFLOW__CORE__PARALLELISM ?= 4
export AIRFLOW__API__BASE_URL ?= http://127.0.0.1:$(AIRFLOW_PORT)
export AIRFLOW_PORT MLFLOW_PORT
export SPARK_LOCAL_IP ?= 127.0.0.1
# One warm Spark for every task and run: a Spark Connect server on 127.0.0.1 (started by make run, make airflow
# and make test if none answers; make stop stops it). Tasks read its URL from the Airflow connection, the CLI
# from RETRAINER_SPARK_MASTER.
export SPARK_CONNECT_PORT ?= 15002
export AIRFLOW_CONN_RETRAINER_SPARK_CONNECT ?= {"conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": $(SPARK_CONNECT_PORT)}
export RETRAINER_SPARK_MASTER ?= sc://127.0.0.1:$(SPARK_CONNECT_PORT)
# The second path (no Spark Connect connection): the features task submits its job to this connection's master.
export AIRFLOW_CONN_RETRAINER_SPARK ?= {"conn_type": "spark", "host": "local[*]"}
export TF_CPP_MIN_LOG_LEVEL ?= 2
export GX_ANALYTICS_ENABLED ?= False
export PATH := $(BIN):$(PATH)

# Secrets are generated once per checkout into .env (git-ignored, mode 0600) and read from there.
SECRETS := $(CURDIR)/.env
WITH_SECRETS = set -a && . $(SECRETS) && set +a && export AIRFLOW__API_AUTH__JWT_SECRET="$$AIRFLOW_JWT_SECRET" \
	AIRFLOW__CORE__FERNET_KEY="$$AIRFLOW_FERNET_KEY" &&

.PHONY: help install secrets test-tools data airflow-db spark-connect stop bench-pipeline run test test-quick lint docs docs-serve bench bench-train bench-spark mlflow-ui airflow airflow-ui clean

help:
	@echo "make run  [DATE=2013-06-01] [CONF='{\"epochs\": 5}'] [WORKLOAD=arrival_delay_minutes]"
	@echo "                                                  install, land data, run the DAG once, print a summary"
	@echo "make test                                         install, lint, every test tier (unit dags stages e2e server)"
	@echo "make test-quick                                   lint + the unit and DAG-integrity tiers (seconds)"
	@echo "make test-tools                                   once per machine, as root: Debian's chromium and docker-compose"
	@echo "make docs | docs-serve                            the MkDocs site (docs/) built strictly into site/ | served on :8000"
	@echo "make airflow                                      Airflow (api-server, scheduler, dag-processor, triggerer)"
	@echo "                                                  and MLflow on 127.0.0.1 until Ctrl-C"
	@echo "make stop                                         stop the Spark Connect server make run left running"
	@echo "make mlflow-ui | bench | bench-pipeline | bench-train | bench-spark | clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python requirements.txt requirements-dev.txt requirements-nodeps.txt constraints.txt pyproject.toml
	@echo "[install 1/4] pip itself, in $(VENV)"
	@$(BIN)/pip install --quiet --upgrade pip
	@echo "[install 2/4] the pinned stack (Airflow, TensorFlow, PySpark, MLflow, Great Expectations, ~2.5 GB):" \
	  "3-6 minutes on a fresh machine; pip's own lines follow as it resolves, downloads and installs"
	@set -o pipefail; $(BIN)/pip install --progress-bar off -r requirements.txt -r requirements-dev.txt -c constraints.txt \
	  | { grep --line-buffered -E "^(Collecting|Installing collected|Successfully installed)" || true; } \
	  | sed -u -E 's/^(Successfully installed).*/\1 the packages above/; s/^Installing collected.*/installing the collected packages (the longest part; silent) .../; s/^/  /'
	@echo "[install 3/4] packages pinned without their dependencies (requirements-nodeps.txt)"
	@$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	@echo "[install 4/4] retrainer itself (editable)"
	@$(BIN)/python -c "import pyspark, sys; sys.exit(pyspark.__version__ != '4.3.0' and 'pyspark was overwritten: ' + pyspark.__version__)"
	@$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

install: $(VENV)/.installed

$(SECRETS): | $(VENV)/.installed
	$(BIN)/python -m retrainer.devtools.local_stack secrets

secrets: $(SECRETS)

# Debian packages the server tier uses: chromium (browser test) and docker-compose (validates
# docker-compose.yaml). A set-up step of its own (needs root and apt); .ci/run calls it before make test.
test-tools:
	@command -v chromium > /dev/null && command -v docker-compose > /dev/null || \
	  (echo "installing chromium and docker-compose (Debian packages) for the tests ..."; \
	   apt-get install -y -q chromium docker-compose > /dev/null 2>&1 || \
	   (apt-get update -q > /dev/null && apt-get install -y -q chromium docker-compose > /dev/null))

# Lands 2013 once; again when the record of the landing lacks the commit marker the raw contract now
# requires (a data root landed by an older retrainer: its days have no _SUCCESS and would never count as landed).
LANDED := $(RETRAINER_DATA_ROOT)/raw/_LANDED.json
data: | $(VENV)/.installed
	@$(BIN)/python -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("commit_marker") else 1)' \
	  $(LANDED) 2> /dev/null || $(BIN)/retrainer land --start 2013-01-01 --end 2013-12-31

$(AIRFLOW_HOME)/airflow.db: | $(VENV)/.installed $(SECRETS)
	$(BIN)/python -m retrainer.devtools.local_stack prepare

airflow-db: $(AIRFLOW_HOME)/airflow.db

# Starts the embedded Spark Connect server unless one answers on SPARK_CONNECT_PORT; reused across runs.
spark-connect: install
	@$(BIN)/python -m retrainer.devtools.spark_connect up --port $(SPARK_CONNECT_PORT)

stop: install
	@$(BIN)/python -m retrainer.devtools.spark_connect down --port $(SPARK_CONNECT_PORT)

run: install data airflow-db spark-connect
	@# Airflow creates no task instances for a logical date before the DAG's start_date.
	@if [[ "$(DATE)" < "2013-01-29" ]]; then echo "DATE must be on or after 2013-01-29 (the DAG's start_date); use 'retrainer run --date ...' for earlier dates"; exit 2; fi
	@mkdir -p $(AIRFLOW_HOME)/logs
	@log=$(AIRFLOW_HOME)/logs/dags-test-$(WORKLOAD)-$(DATE).log; \
	echo "running DAG $(WORKLOAD)_retrain for $(DATE) with airflow dags test (full log: $$log) ..."; \
	if $(WITH_SECRETS) $(BIN)/python -m retrainer.devtools.dag_test_progress --log $$log -- \
	    $(BIN)/airflow dags test $(WORKLOAD)_retrain $(DATE) -c '$(CONF)'; then status=0; else status=$$?; fi; \
	echo; $(BIN)/retrainer --log-level WARNING summary --workload $(WORKLOAD) --date $(DATE) --latest || true; \
	if [ $$status -ne 0 ]; then echo; echo "DAG run FAILED (exit $$status); last lines of $$log:"; grep -E "ERROR|Error|failed" $$log | tail -15; fi; \
	exit $$status

# Every tier; the durations of the slowest tests and the total go to test-artifacts/pytest.log, the figure
# the docs quote (docs/testing.md).
test: install lint
	@command -v chromium > /dev/null && command -v docker-compose > /dev/null || \
	  { echo "the server tier needs Debian's chromium and docker-compose: run 'make test-tools' once (as root)"; exit 2; }
	@mkdir -p test-artifacts
	set -o pipefail; $(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=25 2>&1 | tee test-artifacts/pytest.log

test-quick: install lint
	$(BIN)/python -m pytest -m "unit or dags" tests/unit tests/dags

docs: install
	$(BIN)/mkdocs build --strict --site-dir $(CURDIR)/site

docs-serve: install
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install data spark-connect
	$(BIN)/python bench/bench_pipeline.py

# The whole pipeline cold and warm (28 days, a year) beside the TFX peer from the same sitting (TFX=<its root>).
bench-pipeline: install data spark-connect
	$(BIN)/python bench/pipeline.py $(if $(TFX),--tfx $(TFX))

# tf.data from Parquet vs in-memory batches, 1x and 10x (needs the features of the run dated 2013-12-31, 350 days)
bench-spark: install
	$(BIN)/python bench/spark_features.py

bench-train: install data spark-connect
	$(BIN)/retrainer check-raw --date 2013-12-31 --window-days 350 --eval-days 28 > /dev/null
	$(BIN)/retrainer features --date 2013-12-31 --window-days 350 --eval-days 28 > /dev/null
	$(BIN)/retrainer validate --date 2013-12-31 --window-days 350 --eval-days 28 > /dev/null
	$(BIN)/python bench/train_input.py

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

airflow: install data $(SECRETS)
	$(BIN)/python -m retrainer.devtools.local_stack up

airflow-ui: airflow

clean: stop
	rm -rf $(AIRFLOW_HOME) $(CURDIR)/.mlflow $(RETRAINER_DATA_ROOT)/runs $(CURDIR)/.spark-connect
