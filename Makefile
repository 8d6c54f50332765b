# `make run` and `make test` set up a fresh Debian 12 machine themselves (apt + virtualenv).
.PHONY: setup run test lint bench

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/pbx run

test: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/pytest

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
