# yunstack: `make run` starts the all-in-one cloud, `make test` runs every test.
ARGS ?=

.PHONY: run install system check test bench clean-state

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

bench: install
	.venv/bin/python bench/identity.py
