# The README's two commands. Each one sets up everything it needs on a fresh machine.
#   make run    build the environment, then run the default recipe: the grammar recipe on the
#               FSC grammar (recipes/grammar/conf/fsc.yaml, the built-in corpus)
#   make test   build the environment, then run the test suite
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
SIZE ?= small
STAMP := $(VENV)/.installed

.PHONY: run test env lint tts-voices debian-voices clean-env

env: $(STAMP)

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[all]'
	@$(MAKE) --no-print-directory debian-voices
	touch $@

run: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash recipes/grammar/run.sh --grammar recipes/grammar/conf/fsc.yaml --size $(SIZE)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline data_prep tests

# Debian's flite and festival voices add 9 speakers to the corpus. On the pizza grammar they took
# the held-out engine from 93.7% to 98.1% (docs/results.md), so `make env` installs them where it
# can (root and apt-get), and says how otherwise; DEBIAN_VOICES=0 skips them. Never fatal: the pip
# voices (espeak-ng, piper's joe, Kokoro's five voices, the `tts` extra) are enough to run.
DEBIAN_VOICES ?= 1
debian-voices:
	@if command -v flite >/dev/null && command -v text2wave >/dev/null; then \
	  echo "Debian voices (flite, festival): installed"; \
	elif [ "$(DEBIAN_VOICES)" = 0 ]; then \
	  echo "Debian voices skipped (DEBIAN_VOICES=0)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  $(MAKE) --no-print-directory tts-voices || echo "warning: could not install Debian's flite and festival voices; the corpus uses the pip voices"; \
	else \
	  echo "note: as root, 'make tts-voices' adds Debian's flite and festival voices (9 speakers) to the corpus"; \
	fi

tts-voices:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts

clean-env:
	rm -rf $(VENV)
