# One entry point per habit: make up · make test · make check · make bench
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Verified model files for local runs, tests and CI (see ../shared/models/MODELS.md).
export LOOKOUT_MODELS_DIR ?= $(abspath $(CURDIR)/../shared/models)
# Those copies hold the test face pack (SCRFD-500M + the MobileFaceNet stand-in), not ArcFace's
# w600k_mbf: without this, `make up` would try to download the production default buffalo_sc.
export LOOKOUT_MODELS__FACE_PACK ?= scrfd_mobilefacenet

# Two installs, one stamp each: the runtime (all `make up` needs) and, on top of it, the dev
# tools and the system packages the tests drive. The dev stamp depends on the runtime one, so a
# changed pyproject.toml redoes both, and `make up` after `make test` installs nothing.
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install install-runtime system-deps up test lint check bench clean

install: system-deps $(DEV_STAMP)

install-runtime: $(RUNTIME_STAMP)

# Debian packages the tests drive: nginx (tests/e2e/test_nginx.py), tesseract-ocr (the optional
# text engine, tests/workers/detectors/test_text.py) and chromium (tests/ui/);
# apt-get when missing, a no-op when present. Not needed to run Lookout.
system-deps:
	./scripts/ensure-system-deps.sh
	./scripts/ensure-browser.sh

# insightface goes in with --no-deps: it declares opencv-python (the GUI build), which shares the
# cv2 module with opencv-python-headless and breaks it. pyproject lists what it really imports.
# rapidocr-onnxruntime too (same opencv-python): only the PP-OCR model files in it are used.
$(RUNTIME_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps 'insightface==2.1' 'rapidocr-onnxruntime==1.4.4'
	touch $@

# compreface-sdk with --no-deps: it pins requests-toolbelt==0.9.1, broken under urllib3 2; the
# dev extra installs a requests-toolbelt that works (pyproject.toml).
$(DEV_STAMP): $(RUNTIME_STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps 'deepstack-sdk==0.2.1'  # declares opencv-python: see pyproject
	$(BIN)/pip install --quiet --no-deps 'compreface-sdk==0.6.0'
	touch $@

up: install-runtime
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
