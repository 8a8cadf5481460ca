# The two commands of the README. Each sets everything up first, so both work on a new machine.
.PHONY: setup demo test lint

setup:
	bash deploy/setup.sh

demo: setup
	.venv/bin/python deploy/demo.py

test: setup
	.venv/bin/ruff check .
	.venv/bin/python deploy/lint_imports.py
	.venv/bin/pytest

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
