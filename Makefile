# Two commands on a fresh machine: `make train` and `make test`.
# Each one creates or refreshes .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# gradio declares pillow<13 (pinned: 13.0.0): installed without its dependency check, after requirements-demo.txt
GRADIO := gradio==6.31.0 gradio_client==2.7.2

.PHONY: venv train test test-slow bench gpu-check evaluate sweep-qf clean

$(STAMP): requirements.txt requirements-dev.txt requirements-iqa.txt requirements-demo.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps pyiqa==0.1.16
	$(PY) -m pip install -q -r requirements-iqa.txt
	$(PY) -m pip install -q --no-deps $(GRADIO)
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)

# One torch thread: the same single core Pillow's encode + decode gets, and the data pipeline's main process
# beside its two workers on a 2-core machine; make bench ARGS="--threads 2" for more.
bench: $(STAMP)
	$(PY) bench/jpeg_op.py --threads 1 $(ARGS)

# GPU acceptance check (every recipe, inference timings, JPEG op on the GPU); make gpu-check ARGS="--out DIR"
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py $(ARGS)

# make evaluate CKPT=logs/<task>/runs/<run>/checkpoints/last.ckpt  (plain JPEG when CKPT is empty)
evaluate: $(STAMP)
	$(PY) evaluate.py $(if $(CKPT),ckpt=$(CKPT)) $(ARGS)

# make sweep-qf CKPT=<ckpt> DATA=/path/to/images  (qualities 5..95; plain JPEG when CKPT is empty)
# make sweep-qf METHODS=<list in conf/methods> DATA=/path/to/images  (several methods, one line each)
sweep-qf: $(STAMP)
	$(PY) scripts/sweep_qf.py $(if $(CKPT),ckpt=$(CKPT)) $(if $(METHODS),methods=$(METHODS)) $(if $(DATA),data.source=$(DATA)) $(ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache
