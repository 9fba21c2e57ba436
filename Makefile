# make install  - .venv with the pinned stack, package editable, extension built
# make test     - C++ unit tests (CTest), pytest, Triton-interpreter tests,
#                 Triton kernels compiled for sm_90
# make bench    - the main job: hrnet-fast bench on this machine's default case
# make gpu-check - build, test and benchmark on a CUDA machine in one call

PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export MAX_JOBS ?= 2

EXT_SOURCES := setup.py $(shell find csrc kernels -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' 2>/dev/null)

.PHONY: install test test-cpp test-py test-interp test-triton-compile bench gpu-check clean

install: $(VENV)/.built

$(VENV)/.deps: requirements.txt
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# torch guesses CUDA_HOME=/usr/local from /usr/local/bin/nvcc; the toolkit is
# here. For the build only: exported to every target, it reached `make bench`,
# where torch announced "No CUDA runtime is found, using CUDA_HOME" on machines
# without a GPU (the bench command now drops that notice in any case).
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
$(VENV)/.built: export CUDA_HOME ?= /usr/local/cuda
endif
$(VENV)/.built: $(VENV)/.deps $(EXT_SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	$(PY) -c "import hrnet_fast, json; print(json.dumps(hrnet_fast.build_info()))"
	touch $@

test: install test-cpp test-py test-interp test-triton-compile

test-cpp:
	cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build build/cmake -j $(MAX_JOBS)
	ctest --test-dir build/cmake --output-on-failure

test-py: install
	$(PY) -m pytest tests -q

# TRITON_INTERPRET must be set before triton is imported: its own process.
test-interp: install
	TRITON_INTERPRET=1 $(PY) -m pytest tests/interpreter -q

# The interpreter accepts programs the compiler rejects: compile every Triton
# kernel variant for sm_90 ahead of time (no GPU needed).
test-triton-compile: install
	$(PY) -m hrnet_fast.triton.aot_check

bench: install
	$(PY) -m hrnet_fast bench

gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf build dist *.egg-info hrnet_fast/_C*.so $(VENV)/.built
