# The two commands of the README; each does all set-up from nothing (idempotent, cheap when done).
DATA ?= $(if $(FACEVERIFY_DATA),$(FACEVERIFY_DATA),../shared/data)
PAIR_SAME = $(DATA)/lfw/images/Colin_Powell/Colin_Powell_0001.jpg $(DATA)/lfw/images/Colin_Powell/Colin_Powell_0002.jpg
PAIR_DIFF = $(DATA)/lfw/images/Colin_Powell/Colin_Powell_0001.jpg $(DATA)/lfw/images/Serena_Williams/Serena_Williams_0001.jpg

.PHONY: setup setup-test demo test bench

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --test

demo: setup
	.venv/bin/faceverify verify $(PAIR_SAME)
	.venv/bin/faceverify verify $(PAIR_DIFF)

test: setup-test
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python -m bench
