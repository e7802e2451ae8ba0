# Everything runs from the project's own virtualenv in .venv, made on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rewritten after each install, so the install runs again only when pyproject.toml changes.
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test lint migrate worker beat bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/python -m portal.demo

test: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

migrate: venv
	$(BIN)/python manage.py migrate --noinput

worker: venv
	$(BIN)/python -m celery -A portal worker -l info

beat: venv
	mkdir -p var
	$(BIN)/python -m celery -A portal beat -l info -s var/celerybeat-schedule

# Figures and ratios, printed; each benchmark builds a throwaway portal of its own.
bench: venv
	cd bench && ../$(BIN)/python reconcile.py && ../$(BIN)/python pages.py && ../$(BIN)/python provision.py --quick

# Databases, broker queues, emulator state and collected static files; never source.
clean:
	find var -mindepth 1 -delete 2>/dev/null || true
