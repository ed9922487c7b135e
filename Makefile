# The two commands a new user types:  make demo   and   make test
# Each creates the virtual environment and installs the project when missing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.gqn-gym-installed
# PyTorch: the CPU build by default. On a CUDA machine, install the torch you
# want into the venv first (or set TORCH_SPEC), e.g. TORCH_SPEC="torch==2.13.0".
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
export PYGLET_HEADLESS ?= 1

.PHONY: demo test test-fast setup bench lint clean

$(STAMP): pyproject.toml
	@scripts/ensure_system_deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)" \
		|| $(PIP) install -q torch --index-url $(TORCH_CPU_INDEX)
	$(PIP) install -q -e ".[dev,rl]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m gqn_env.cli demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2

# Development loop: everything but the tests marked slow (subprocess and PPO smoke runs).
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks.env_speed

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) outputs .pytest_cache
