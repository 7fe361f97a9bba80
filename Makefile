# yunstack: `make run` starts the all-in-one cloud, `make test` runs every test, `make interop` runs
# OpenStack's own conformance tests (Tempest, interop guideline 2020.06) against a fresh cloud.
ARGS ?=

.PHONY: run install system check test interop bench clean-state

system:
	scripts/install-system

install: system
	scripts/install

run: install
	.venv/bin/yun up $(ARGS)

check: install
	scripts/check

test: install
	scripts/test

interop: install
	scripts/interop

bench: install
	.venv/bin/python bench/identity.py
