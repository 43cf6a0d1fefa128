# One entry point per habit: make up · make test · make check · make bench
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Verified model files for local runs, tests and CI (see ../shared/models/MODELS.md).
export LOOKOUT_MODELS_DIR ?= $(abspath $(CURDIR)/../shared/models)
# Those copies hold the test face pack (SCRFD-500M + the MobileFaceNet stand-in), not ArcFace's
# w600k_mbf: without this, `make up` would try to download the production default buffalo_sc.
export LOOKOUT_MODELS__FACE_PACK ?= scrfd_mobilefacenet

.PHONY: install system-deps up test lint check bench clean

install: system-deps $(VENV)/.installed

# Debian packages the tests drive: nginx (tests/e2e/test_nginx.py) and chromium (tests/ui/);
# apt-get when missing, a no-op when present.
system-deps:
	./scripts/ensure-system-deps.sh
	./scripts/ensure-browser.sh

# insightface goes in with --no-deps: it declares opencv-python (the GUI build), which shares the
# cv2 module with opencv-python-headless and breaks it. pyproject lists what it really imports.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps 'insightface==2.1'
	touch $@

up: install
	$(BIN)/lookout up

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

check: lint test

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .lookout .mypy_cache .ruff_cache .pytest_cache
