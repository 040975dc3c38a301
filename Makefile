# Two entry points for a newcomer: `make demo` and `make test`. Both build a local virtualenv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install browser

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: install
	$(PY) -m app

# The browser test drives Debian's Chromium; as root it is installed here, otherwise that test says how.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && sh scripts/install_chromium.sh; } \
		|| echo "chromium is missing: the browser test will skip (sudo make browser installs it)"

test: install browser
	$(PY) -m pytest -q
