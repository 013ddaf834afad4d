# The README's two commands: `make run` (main job, tiny embedded default) and `make test`.
# Both create .venv if missing and install the tested set (constraints.txt) first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fluxsr-installed
OUT    ?= runs/demo
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install run test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/fluxsr run --out $(OUT)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(OUT) .prefect .pytest_cache
