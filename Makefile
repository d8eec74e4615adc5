# The two commands a user types on a fresh machine are `make demo` and `make test`;
# both set up .venv/ first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all test-min test-peers fuzz lint format diff bench engines tfjs clean

install: $(STAMP)

# pyproject.toml declares ranges; constraints.txt pins the versions the README was measured with,
# [cpu] brings tensorflow-cpu, [deploy] what `convnext verify` / `export` use (Pillow, matplotlib,
# LiteRT), [demo] scikit-learn (its digits are the demo's data).
$(STAMP): pyproject.toml constraints.txt
	@echo "setting up $(VENV)/: installing the pinned packages (2.8 GB; about 3 minutes, quiet until done)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[cpu,test,deploy,demo]'
	touch $(STAMP)
	@echo "set up: the command is $(VENV)/bin/convnext (or: source $(VENV)/bin/activate)"

demo: $(STAMP)
	$(PY) -m examples.demo

# The default tier: structural cases on tiny specs, the real variants at the smallest sizes that
# keep every code path, every named variant's parameter count (no weights allocated). Two
# workers, a test file each (pytest-xdist): much of a test's time is single-threaded Python
# (building Keras models, writing files), and the two together stay under 4 GB.
# TF.js (make tfjs) is installed too where npm is, for the tests that run a TF.js model in Node;
# without it they are skipped.
test: $(STAMP)
	@command -v npm >/dev/null && $(MAKE) --no-print-directory tfjs \
		|| echo "no TF.js in Node (npm missing or failed): its tests are skipped"
	$(PY) -m pytest -n 2 --dist loadfile

# The exhaustive tier as well: parity of every named variant in float64 and float32, up to the
# 660M-parameter convnextv2_huge (about 10 GB resident at its peak, and much longer).
test-all: $(STAMP)
	$(PY) -m pytest -m "not peer"

# The default tests again with the lowest versions pyproject.toml declares (constraints-min.txt),
# in an environment of their own.
test-min: .venv-min/.installed
	.venv-min/bin/python -m pytest

.venv-min/.installed: pyproject.toml constraints-min.txt
	$(PYTHON) -m venv .venv-min
	.venv-min/bin/python -m pip install --quiet --disable-pip-version-check \
		-c constraints-min.txt -e '.[cpu,test]'
	touch $@

# Fuzzing of the readers with new random inputs on every run (tests/files/test_fuzz.py): 2000 mutated
# files of each kind, about 40 minutes on 2 cores. `make test` runs a fixed slice of it.
fuzz: $(STAMP)
	CONVNEXT_FUZZ_EXAMPLES=2000 $(PY) -m pytest tests/files/test_fuzz.py

# Optional: the suite again with the real peers, in one environment as users have it: torch
# 2.14.1 as the package index serves it (a multi-GB CUDA build) with its triton left installed
# (triton crashes when imported after TensorFlow: the project imports it first, and
# tests/peers/test_torch_from_the_index.py runs the commands there), torchvision, timm,
# open_clip, transformers, mmpretrain, Keras on JAX, and tensorflow-cpu. Not part of `make test`.
PEERS := .venv-peers
PEER_PINS := torch==2.14.1 torchvision==0.29.1 timm==1.0.31 open-clip-torch==3.3.0 \
	transformers==5.23.0 mmpretrain==1.2.0 mmengine==0.10.7 mmcv-lite==2.2.0

# The third-party converters people deploy a PyTorch ConvNeXt with, each in an environment of
# its own (their pins conflict: onnx2tf pins tensorflow 2.19 and numpy 1.26), beside the CPU
# torch 2.13.0. tests/peers/peer_converters.py runs in each to write an artifact that
# tests/peers/test_third_party_artifacts.py verifies. onnx2tf 2.x needs Python 3.12: on 3.11
# pip takes 1.29.24, the last release for it (pinned so everywhere; it pins tensorflow 2.19);
# onnxscript is torch.onnx's. nobuco 0.17 needs Keras 2 (tensorflow 2.15) and torchvision,
# whose PyPI wheels match the index's torch 2.14.1, not the CPU 2.13.0. Nothing of this
# project is installed there: the script puts the checkout on sys.path (convnext_torch needs
# torch only). Changed pins: rm -r the environment.
# tensorflowjs_converter (TF.js graph models from a SavedModel, tests/peers/test_tfjs.py) pins
# tensorflow 2.19; ydf==0.11.0 because the newest (0.16) that tensorflow_decision_forests pulls,
# and the converter imports, needs a newer protobuf than tensorflow 2.19's.
THIRD_PARTY_STAMPS := .venv-litert/.installed .venv-onnx2tf/.installed .venv-nobuco/.installed \
	.venv-tfjs/.installed
PINS_litert := torch==2.13.0 litert-torch==0.10.0
PINS_onnx2tf := torch==2.13.0 onnx2tf==1.29.24 onnxscript==0.7.2
PINS_nobuco := torch==2.14.1 torchvision==0.29.1 nobuco==0.17.0 tensorflow-cpu==2.15.1
PINS_tfjs := tensorflowjs==4.22.0 ydf==0.11.0

$(THIRD_PARTY_STAMPS): .venv-%/.installed:
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --disable-pip-version-check $(PINS_$*)
	touch $@

test-peers: $(PEERS)/.installed $(THIRD_PARTY_STAMPS) .tfjs/.installed
	CONVNEXT_TIMM_PYTHON=$(CURDIR)/$(PEERS)/bin/python $(PEERS)/bin/python -m pytest -m peer -s

# constraints.txt without its torch pin (the CPU build's 2.13.0): the peers need torchvision
$(PEERS)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(PEERS)
	grep -v '^torch==' constraints.txt > $(PEERS)/constraints.txt
	$(PEERS)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c $(PEERS)/constraints.txt $(PEER_PINS) -e '.[cpu,test,deploy,jax]'
	touch $@

# TF.js in Node, which `convnext verify` runs a TF.js graph model with: the pure-JavaScript
# packages from the npm registry (not tfjs-node, whose native library is downloaded from
# elsewhere), at the versions tools/tfjs/package-lock.json pins. verify finds them in .tfjs/,
# or where CONVNEXT_TFJS_MODULES points.
TFJS := .tfjs
tfjs: $(TFJS)/.installed

$(TFJS)/.installed: tools/tfjs/package.json tools/tfjs/package-lock.json
	mkdir -p $(TFJS)
	cp tools/tfjs/package.json tools/tfjs/package-lock.json $(TFJS)/
	npm ci --prefix $(TFJS) --ignore-scripts --no-audit --no-fund --silent
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The two model files, each class and function beside its twin, fitted to the terminal: side by
# side from 120 columns, a unified diff below (DIFF=--unified or DIFF=--side-by-side to choose).
# Keras-only bookkeeping (build, get_config, convnext_tf/layers.py) is listed, not shown.
diff: | $(STAMP)
	$(PY) tools/mirror_diff.py $(DIFF) | less -FX

# The inference engines deployers compare against on a CPU, in an environment of their own:
# torch.onnx.export (torch, onnx, onnxscript) writes our PyTorch model as ONNX, which OpenVINO
# and ONNX Runtime run.
ENGINES := .venv-engines
PINS_engines := torch==2.13.0 onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.31.1 \
	openvino==2026.4.1

# Speed and memory against the peers, each implementation in a process of its own (about an
# hour; BENCH="--quick" for one round without torch.compile, the slowest keras.applications
# modes and the exports past convnext_base; BENCH="--only export" for one section). OpenVINO
# and ONNX Runtime run in .venv-engines, made here; timm and transformers are timed where
# `make test-peers` made their environments, skipped with a line otherwise.
# Results: benchmarks/results.{md,json}.
bench: $(STAMP) $(ENGINES)/.installed
	$(PY) benchmarks/bench.py $(BENCH)

engines: $(ENGINES)/.installed

$(ENGINES)/.installed:
	$(PYTHON) -m venv $(ENGINES)
	$(ENGINES)/bin/python -m pip install --quiet --disable-pip-version-check $(PINS_engines)
	touch $@

clean:
	rm -rf $(VENV) .venv-min $(PEERS) .venv-timm .venv-litert .venv-onnx2tf .venv-nobuco .venv-tfjs $(TFJS) $(ENGINES) build *.egg-info .pytest_cache .ruff_cache
