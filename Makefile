# The two commands of the README; each does all set-up from nothing (idempotent, cheap when done).
DATA ?= $(if $(FACEVERIFY_DATA),$(FACEVERIFY_DATA),../shared/data)
PAIR_SAME = $(DATA)/lfw/images/Colin_Powell/Colin_Powell_0001.jpg $(DATA)/lfw/images/Colin_Powell/Colin_Powell_0002.jpg
PAIR_DIFF = $(DATA)/lfw/images/Colin_Powell/Colin_Powell_0001.jpg $(DATA)/lfw/images/Serena_Williams/Serena_Williams_0001.jpg

.PHONY: setup setup-test demo test test-fast bench

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --test

demo: setup
	.venv/bin/faceverify verify $(PAIR_SAME)
	.venv/bin/faceverify verify $(PAIR_DIFF)

test: setup-test
	.venv/bin/python -m pytest -q

# the tier without training or long start-ups (the tests marked `slow`, tests/conftest.py): < 2 min
test-fast: setup-test
	.venv/bin/python -m pytest -q -m "not slow"

bench: setup
	.venv/bin/python -m bench
