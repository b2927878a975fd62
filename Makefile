# sessionstate: `make migrate` and `make test` work on a fresh clone with only python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: migrate rollback status test bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,postgres,mysql]'
	touch $(STAMP)

migrate: $(STAMP)  ## apply pending migrations to SESSIONSTATE_DATABASE_URL or ~/.sessionstate
	$(BIN)/python -m sessionstate migrate

rollback: $(STAMP)  ## undo the last migration
	$(BIN)/python -m sessionstate rollback

status: $(STAMP)  ## list applied and pending migrations
	$(BIN)/python -m sessionstate status

test: $(STAMP)  ## run the test suite
	$(BIN)/python -m pytest

bench: $(STAMP)  ## sessionstate vs hand-written SQL: BACKEND=sqlite (default), postgresql or mysql
	@$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/python -m pip install --quiet --disable-pip-version-check 'matplotlib>=3.7,<4' || echo "(matplotlib not installable: the bench runs without its chart)"
	$(BIN)/python -m bench.run --backend "$(BACKEND)" $(BENCH_ARGS)

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) build *.egg-info .pytest_cache
