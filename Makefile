# Two entry points: `make demo` (the main job on the embedded default) and `make test`.
# Both create or reuse .venv and install through constraints.txt (torch==2.13.0, the CPU build),
# also inside build environments (PIP_CONSTRAINT), so nothing pulls a CUDA torch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: venv demo test bench lint gpu-check

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-annotators.txt requirements-mediapipe.txt \
		constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -r requirements-dev.txt
	# sam2's metadata asks for torchvision (CUDA-only here) though its video predictor never imports it
	SAM2_BUILD_CUDA=0 $(VENV)/bin/pip install -q --no-build-isolation --no-deps sam2==1.1.0
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m vace_core demo

# the real-ComfyUI and browser tests need a ComfyUI runtime: with COMFYUI_PATH / COMFYUI_PYTHON unset and none in
# ~/.cache/vace-comfyui, the first line builds it there (../shared/tools/comfyui-runtime.sh, 1-3 minutes) or says
# how to get one
test: venv
	$(PY) -m tests.integration.comfy_server --provision
	$(PY) -m pytest

bench: venv
	$(PY) benchmarks/bench_transformer.py

# correctness, speed and VRAM of the CUDA path (benchmarks/gpu_check.py; --dry-run runs it small on CPU)
gpu-check: venv
	$(PY) benchmarks/gpu_check.py

lint: venv
	$(VENV)/bin/ruff check .
