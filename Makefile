# Two commands on a fresh machine (Python 3.11, no GPU, no data):
#   make demo   install the base package into .venv (ONNX Runtime, no TensorFlow), then name the characters in
#               the sample pictures with the shipped model
#   make test   install with the test extras (the training extra included), then run the tests
#   make check  the fast lane: every test but the slow ones (training, end to end, browser)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM := /usr/bin/chromium

.PHONY: demo test check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade "pip==25.3"
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/simpsons predict samples

test: $(VENV)/.installed-test $(CHROMIUM)
	$(BIN)/python -m pytest

check: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "not slow" -q

# Debian's Chromium for tests/test_web_browser.py (Playwright drives it; it never downloads a browser itself)
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "make: $(CHROMIUM) is missing (apt-get install chromium as root): the browser test will skip"; fi

bench: $(VENV)/.installed
	$(BIN)/python bench/speed.py

clean:
	rm -rf $(VENV) build src/*.egg-info
