# fraudscale: `make help` lists the targets. Everything installs from the project's own files:
# uv comes from PyPI into .tools/, the environment from uv.lock into .venv/.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := .venv
export DAGSTER_HOME := $(CURDIR)
RUN := $(UV) run --frozen

DEMO_DAYS ?= 21
DEMO_CARDS ?= 5000
DEMO_MERCHANTS ?= 500

.PHONY: help
help: ## Show the targets and what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# fraud_native (the `native` extra) is Rust: uv builds it with cargo, rustup's when a login
# shell did not put it on PATH, else Debian's cargo-web (installed when missing).
export PATH := $(HOME)/.cargo/bin:$(PATH)
NATIVE_SOURCES := fraud_native/Cargo.toml fraud_native/Cargo.lock fraud_native/pyproject.toml \
  fraud_native/fraud_native.pyi $(wildcard fraud_native/src/*.rs)

.PHONY: cargo
cargo: ## Install Debian's cargo-web when no cargo is on PATH (fraud_native is built with it)
	@command -v cargo >/dev/null || { echo "installing Debian's cargo-web (builds fraud_native)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo-web >/dev/null; }

.venv/.synced: $(UV) pyproject.toml uv.lock $(NATIVE_SOURCES) | cargo
	$(UV) sync --frozen --all-extras
	@touch $@

.PHONY: install
install: .venv/.synced ## Create .venv from the lock file (uv bootstrapped from PyPI)

.PHONY: check-java
check-java: ## Spark needs Java 17 or newer on PATH
	@java -version 2>&1 | awk -F'"' '/version/ {split($$2, v, "."); if (v[1] + 0 < 17) {print "Spark needs Java >= 17, found " $$2; exit 1}}' \
	  || { echo "Spark needs Java 17: install a JDK (Debian: apt-get install openjdk-17-jre-headless)"; exit 1; }

.PHONY: spark-aot
spark-aot: install check-java ## Record the Spark driver's AOT cache for FRAUD_ASSETS_JAVA_HOME (a JDK 25+; about 2.5 min)
	$(RUN) python -m fraud_assets.lib.spark_aot record

.PHONY: spark-server
spark-server: install check-java ## Keep a warm Spark Connect server on 127.0.0.1:15002 for nightly runs (FRAUD_ASSETS_SPARK_REMOTE=sc://127.0.0.1:15002)
	$(RUN) python -m fraud_devtools.spark_connect --port 15002 --master 'local[*]'

.PHONY: lock
lock: $(UV) ## Re-resolve dependencies into uv.lock
	$(UV) lock

.PHONY: lint
lint: install ## Ruff lint + format check, mypy; rustfmt and clippy on fraud_native
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	cd fraud_native && cargo fmt --check && cargo clippy --quiet --release -- -D warnings

.PHONY: format
format: install ## Apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

DEMO_PACKAGES := redis-server
TEST_PACKAGES := $(DEMO_PACKAGES) chromium buildah debootstrap

define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

.PHONY: redis
redis: ## Install Debian's redis-server if it is missing (tests start their own on free ports)
	$(call apt_install,$(DEMO_PACKAGES))

.PHONY: test-packages
test-packages: ## Install the Debian packages the tests use when missing: redis-server, chromium, buildah, debootstrap
	$(call apt_install,$(TEST_PACKAGES))

.PHONY: kafka-jars
kafka-jars: install check-java ## Resolve the Kafka broker jars from Maven Central into .kafka/libs (once)
	@command -v mvn >/dev/null || { echo "Maven (mvn) is needed to fetch the Kafka broker: apt-get install maven"; exit 1; }
	$(RUN) python -m fraud_devtools.kafka fetch

.PHONY: kafka-up
kafka-up: kafka-jars ## Start a single-node Kafka broker (KRaft) on 127.0.0.1:9092 in the background
	$(RUN) python -m fraud_devtools.kafka up

.PHONY: kafka-down
kafka-down: install ## Stop the broker that kafka-up started
	$(RUN) python -m fraud_devtools.kafka down

.PHONY: spark-cluster
spark-cluster: install check-java ## Run a standalone Spark cluster (master + 2 workers, pyspark's jars) on loopback until Ctrl-C; FRAUD_ASSETS_SPARK_MASTER takes the URL it prints
	$(RUN) python -m fraud_devtools.spark_cluster --workers 2

.PHONY: stream
stream: install ## Run a stream worker (FRAUD_STREAM_* settings; KAFKA_BOOTSTRAP_SERVERS, default 127.0.0.1:9092)
	$(RUN) python -m streaming worker --loglevel info

PROMETHEUS_VERSION := v0.316.0
PROM_TOOLS := .tools/bin/prometheus .tools/bin/promtool .tools/bin/pushgateway

.tools/bin/prometheus .tools/bin/promtool &:
	@command -v go >/dev/null || { echo "Go is needed to build Prometheus: apt-get install golang"; exit 1; }
	GOBIN=$(CURDIR)/.tools/bin GOFLAGS=-trimpath go install \
	  github.com/prometheus/prometheus/cmd/prometheus@$(PROMETHEUS_VERSION) \
	  github.com/prometheus/prometheus/cmd/promtool@$(PROMETHEUS_VERSION)

# The Pushgateway's versions are not listed by the module proxy (so `go install x@v` refuses
# it): it is built from a module of ours that pins it (fraud_devtools/gotools).
.tools/bin/pushgateway: fraud_devtools/gotools/go.mod fraud_devtools/gotools/go.sum
	cd fraud_devtools/gotools && go build -trimpath -o $(CURDIR)/.tools/bin/pushgateway github.com/prometheus/pushgateway

.PHONY: prometheus
prometheus: $(PROM_TOOLS) ## Build Prometheus, promtool and the Pushgateway from the Go module proxy into .tools/bin (once, about 6 min)

HELM_VERSION := v4.3.2

.tools/bin/helm:
	@command -v go >/dev/null || { echo "Go is needed to build helm: apt-get install golang"; exit 1; }
	GOBIN=$(CURDIR)/.tools/bin GOFLAGS=-trimpath go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

.PHONY: helm
helm: .tools/bin/helm ## Build helm from the Go module proxy into .tools/bin (once, about 3 min)

.PHONY: chart
chart: helm install ## Lint and render the chart with its CI value sets, and run the chart's tests
	.tools/bin/helm lint --strict helm/fraudscale
	$(RUN) pytest tests/deploy/test_chart.py

.PHONY: base-image
base-image: install ## Make the Debian base image with debootstrap (once per machine, kept in buildah's storage)
	$(RUN) python -m fraud_devtools.images base

.PHONY: image
image: install base-image ## Build the serving, streaming and assets images with buildah (deploy/Containerfile)
	$(RUN) python -m fraud_devtools.images build serving streaming assets

.PHONY: bench
bench: install check-java kafka-jars ## Run the three benchmarks briefly (about 10 min) and print their ratios in one table; not part of make test
	$(call apt_install,wrk)
	$(RUN) python -m bench.serving --seconds 3
	$(RUN) python -m bench.streaming --rows 20000 --seconds 5
	$(RUN) python -m bench.batch --rows 300000 --connect-nights 2
	$(RUN) python -m bench.summary

.PHONY: rules
rules: $(PROM_TOOLS) ## Check the alert and recording rules and run their unit tests with promtool
	.tools/bin/promtool check rules helm/fraudscale/files/prometheus/rules.yml
	$(RUN) pytest tests/ops/test_rules.py

# Set-up steps that wait on the network (uv, apt, Maven) run beside the ones that compile
# (the Go tools): on a fresh machine that saves minutes.
.PHONY: test-setup
test-setup: install check-java test-packages kafka-jars prometheus helm

.PHONY: test
test: ## Set up everything on a fresh machine and run the whole suite
	$(MAKE) --no-print-directory -j4 test-setup
	$(MAKE) --no-print-directory base-image lint
	$(RUN) pytest

.PHONY: test-unit
test-unit: install ## Only the fast tests that start no external service
	$(RUN) pytest -m unit

.PHONY: demo
demo: install check-java redis kafka-jars ## Run the platform on embedded defaults: simulate, ingest, train, publish, score (batch, REST, stream)
	$(RUN) fraudscale generate --days $(DEMO_DAYS) --cards $(DEMO_CARDS) --merchants $(DEMO_MERCHANTS) --out data/landing
	$(RUN) fraudscale summary data/landing
	$(RUN) python -m fraud_assets.demo
	$(RUN) python -m serving.demo
	$(RUN) python -m streaming.demo

.PHONY: serve
serve: install ## Serve the published champion over REST on http://127.0.0.1:8000 (FRAUD_SERVING_* settings)
	$(RUN) python -m serving.app

.PHONY: dagster
dagster: install ## Open the Dagster UI on the asset graph (http://127.0.0.1:3000)
	$(RUN) dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

.PHONY: mlflow-ui
mlflow-ui: install ## Open the MLflow UI on the local tracking store (http://127.0.0.1:5000)
	$(RUN) mlflow ui --backend-store-uri sqlite:///$(CURDIR)/data/mlflow/mlflow.db --host 127.0.0.1 --port 5000

.PHONY: clean
clean: ## Remove generated data and caches (keeps .venv and .tools)
	rm -rf data .dagster .faust .pytest_cache .mypy_cache .ruff_cache
