# Two commands: `make demo` and `make test`. Everything else is a step they share.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HARTONOMOUS_HOME ?= $(CURDIR)/.hartonomous
PYTEST_ARGS ?=

.PHONY: demo test install system-deps up down status lint bench clean

demo: install
	$(BIN)/hartonomous demo

test: install
	$(BIN)/hartonomous up
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: no tests ran - that is a failure"; exit 1; fi; \
	  exit $$rc

install: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml setup.py $(wildcard native/*.c native/*.h) scripts/system-deps
	@scripts/system-deps
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

system-deps:
	@scripts/system-deps

up: install
	$(BIN)/hartonomous up

down:
	$(BIN)/hartonomous down

status:
	$(BIN)/hartonomous status

lint: install
	$(BIN)/ruff check .

clean: down
	rm -rf build *.egg-info native/*.so
