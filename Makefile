# Two commands for a fresh machine with only python3:
#   make run    set up .venv and serve on 127.0.0.1:7749 with data in ./kaf-data
#   make test   set up .venv and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test venv bench versus
venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml setup.cfg setup.py kaf/_records.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/twistd --help | grep -q '^ *kaf ' || (echo "twistd does not list kaf" && false)
	touch $@

# --pidfile= : twistd writes no twistd.pid here, so several servers (other
# ports, other data folders) run side by side from this folder.
run: venv
	$(BIN)/twistd -n --pidfile= kaf $(ARGS)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks (needs wrk: apt-get install -y wrk); see benchmarks/README.rst
bench: venv
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# Kaf beside the Go version (needs wrk and golang-go); see benchmarks/README.rst
versus: venv
	$(BIN)/python benchmarks/versus.py $(BENCH_ARGS)
