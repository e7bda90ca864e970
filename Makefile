# Two commands do all the set-up on a fresh machine:
#   make demo   installs into .venv and runs the whole pipeline on the embedded sample data
#   make test   installs into .venv and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel of torch; GPU users: see README "GPU install".
TORCH_SPEC ?= torch==2.13.0
WORKSPACE ?= workspace

.PHONY: install demo test check-model bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]" "$(TORCH_SPEC)"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/vae3d --workspace $(WORKSPACE) demo

test: install
	$(BIN)/ruff check vae3d flows data_contracts tests bench
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not model_env"  # two workers: much of the suite waits on servers and subprocesses; the trained model's tests share one

# the registered model in a fresh venv of its own logged requirements (minutes: torch and mlflow)
check-model: install
	$(BIN)/python -m pytest -m model_env

bench: install
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(WORKSPACE) .pytest_cache
