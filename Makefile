# Developer shortcuts. PYTHON defaults to the virtual environment of the README's quick start.
PYTHON ?= .venv/bin/python

.PHONY: docs docs-build report test

# Serve the documentation site with live reload on http://127.0.0.1:8000
docs:
	$(PYTHON) -m mkdocs serve

# Build the documentation site into site/; any warning is an error
docs-build:
	$(PYTHON) -m mkdocs build --strict

# Rewrite the benchmark tables of docs/benchmarks.md and the README from benchmarks/results/
report:
	$(PYTHON) docs/scripts/report.py

# Run the test suite (the README's test command)
test:
	$(PYTHON) -m pytest -q
