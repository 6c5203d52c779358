# Developer and CI entry points. `make test` is what CI runs (.ci/run).
#
# Virtualenvs are rebuilt only when pyproject.toml (or the interpreter finder) changes: the stamp
# file <venv>/.installed records the last successful `pip install`. The benchmarks get a venv of
# their own (.venv-bench) so that what they install (virtualizarr and its pins) never changes the
# environment the tests run in.

VENV        := .venv
BENCH_VENV  := .venv-bench
STAMP       := $(VENV)/.installed
BENCH_STAMP := $(BENCH_VENV)/.installed
PYTEST_ARGS ?= -n 2
BENCH_ARGS  ?=

.PHONY: venv demo test lint typecheck pytest bench format clean
# One target at a time even under `make -j`: `test` runs its steps in order (lint, types, tests).
.NOTPARALLEL:

venv: $(STAMP)

# A venv is usable when its interpreter runs and is >= 3.12; $(call venv_ok,DIR) is "ok" if so.
# An unusable one (missing, or its base interpreter gone) is rebuilt even when its stamp is fresh.
PY_CHECK := import sys; sys.exit(sys.version_info < (3, 12))
venv_ok   = $(shell $(1)/bin/python -c '$(PY_CHECK)' >/dev/null 2>&1 && echo ok)

$(STAMP): EXTRAS := all,test
$(STAMP): pyproject.toml scripts/python.sh $(if $(call venv_ok,$(VENV)),,FORCE)
$(BENCH_STAMP): EXTRAS := all,bench
$(BENCH_STAMP): pyproject.toml scripts/python.sh $(if $(call venv_ok,$(BENCH_VENV)),,FORCE)

.PHONY: FORCE
FORCE:

# (Re)create the venv when it is unusable, then install the package editable with the extras
# named above.
%/.installed:
	@if ! $*/bin/python -c '$(PY_CHECK)' >/dev/null 2>&1; then \
		python=$$(sh scripts/python.sh) || exit 1; \
		echo "creating $* with $$python"; \
		rm -rf $* && "$$python" -m venv $* || exit 1; \
	fi
	$*/bin/python -m pip install --quiet --editable '.[$(EXTRAS)]'
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/vcube demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# pytest exits 5 when it collected no tests: a test run that tests nothing is a failure here.
pytest: $(STAMP)
	@$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

test: lint typecheck pytest

# Every benchmarks/bench_*.py in turn; e.g. `make bench BENCH_ARGS=--quick`. Results land in
# benchmarks/out/ (git-ignored).
bench: $(BENCH_STAMP)
	@set -e; for script in benchmarks/bench_*.py; do \
		echo "$(BENCH_VENV)/bin/python $$script $(BENCH_ARGS)"; \
		$(BENCH_VENV)/bin/python "$$script" $(BENCH_ARGS); \
	done

# Apply the formatter and the safe lint fixes.
format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(BENCH_VENV) build dist .mypy_cache .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
