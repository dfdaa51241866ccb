# Quick start: `make demo` (set-up + replay of the bundled clip), `make test` (set-up + all tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean install-kiosk uninstall-kiosk

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The edge app alone: no TensorFlow.
$(VENV)/.installed-edge: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Everything: training (TensorFlow), metrics and test tools.
$(VENV)/.installed-all: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[train,metrics,dev]"
	touch $@ $(VENV)/.installed-edge

demo: $(VENV)/.installed-edge
	$(BIN)/agecheck replay

test: $(VENV)/.installed-all
	$(BIN)/python -m pytest -q -ra

lint: $(VENV)/.installed-all
	$(BIN)/ruff check edge_app training tests bench

bench: $(VENV)/.installed-all
	$(BIN)/python bench/stages.py
	$(BIN)/python bench/detector_choice.py

# Kiosk service (root): /opt/agecheck, /etc/agecheck/config.toml, agecheck.service.
install-kiosk:
	systemd/install.sh

uninstall-kiosk:
	systemd/install.sh --remove

clean:
	rm -rf $(VENV) .pytest_cache agecheck-output-*
