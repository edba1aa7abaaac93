# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: setup test test-fast demo bench clean browser

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch lies on local disk; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow (a trained run, toy-CNN training, EfficientNet): under a minute.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Debian's chromium for the report's browser test (tests/test_report.py). Installed only when it is
# missing and we are root with apt-get; otherwise nothing happens and that test skips (or fails
# under VRX_REQUIRE_BROWSER=1, as in CI).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

demo: $(STAMP)
	$(BIN)/vrx demo --out $(DEMO_OUT)

bench: $(STAMP)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
