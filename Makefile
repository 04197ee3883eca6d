# ptif: `make demo` shows it working, `make test` checks everything (`make test-fast`: all but the
# slow tests). Both start from a fresh clone.
VENV   ?= .venv
PYTHON ?= python3
UV_VERSION := 0.13.9
BIN    := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: setup system-deps node-deps demo test test-fast lint format bench bench-quality clean

## setup: create .venv with ptif and its locked dependencies (uv.lock)
setup: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml uv.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv sync --quiet --frozen --inexact --all-extras --all-groups --compile-bytecode
	touch $@

## system-deps: Debian packages for EPS, the second TIFF reader and the IIIF server tests
system-deps:
	@bash scripts/system-deps.sh || { \
	  if [ -n "$$CI" ]; then exit 1; fi; \
	  echo "make: some system packages are missing; the tests that need them will be skipped" >&2; }

## node-deps: iiif-processor (serverless-iiif's image core) for tests/test_iiif_processor.py,
## at the version package-lock.json pins, into tests/iiif_processor/node_modules (git ignores it)
NODE_DIR := tests/iiif_processor
node-deps:
	@if command -v npm >/dev/null; then npm ci --silent --no-audit --no-fund --prefix $(NODE_DIR); \
	elif [ -n "$$CI" ]; then echo "make: npm is missing (Node.js 20 or later)" >&2; exit 1; \
	else echo "make: npm is missing; the iiif-processor test will be skipped" >&2; fi

## demo: convert a handful of awkward sample images into pyramids under ptif-demo/ (its own
## folder: ./ptif-data, where a real run on folders keeps its stores, is never touched)
demo: setup
	$(BIN)/python examples/demo.py

## test: lint, type-check and run every test
test: setup system-deps node-deps lint
	$(BIN)/pytest -n 2 --dist loadfile

## test-fast: the edit loop: every test not marked slow, without lint (about two minutes)
test-fast: setup
	$(BIN)/pytest -n 2 --dist loadfile -m "not slow"

## lint: ruff (lint and format check) and mypy
lint: setup
	$(BIN)/ruff check src tests bench examples infra scripts
	$(BIN)/ruff format --check src tests bench examples infra scripts
	$(BIN)/mypy

## format: apply ruff's formatting and safe fixes
format: setup
	$(BIN)/ruff check --fix src tests bench examples infra scripts
	$(BIN)/ruff format src tests bench examples infra scripts

## bench: ptif against the plain libvips call on generated images; prints a table
# Bytecode is compiled first, as any installed package has it: otherwise every run would pay
# for compiling ptif and pyvips (PYTHONDONTWRITEBYTECODE stops Python from caching it).
bench: setup
	$(BIN)/python -m compileall -q src/ptif
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(MAKE) bench-quality

## bench-quality: bytes, SSIM and conversion time of the default profile against libvips Q90/Q85
## and GDAL's COG (gdal-bin, from system-deps), with verdicts on the profile's four targets
bench-quality: setup system-deps
	$(BIN)/python -m compileall -q src/ptif
	$(BIN)/python bench/quality.py

## clean: what setup, the demo, the benchmarks and the linters made; never ./ptif-data (a real
## run's stores), and of ptif-demo/ only the files the demo listed as its own
clean:
	-$(PYTHON) examples/demo.py --clean
	rm -rf $(VENV) bench/out .pytest_cache .mypy_cache .ruff_cache $(NODE_DIR)/node_modules
