# sessionstate: `make migrate` and `make test` work on a fresh clone with only python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: migrate rollback status test test-quick test-pythons test-peewee-lowest bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,postgres,mysql,async,openai-agents]'
	touch $(STAMP)

migrate: $(STAMP)  ## apply pending migrations to SESSIONSTATE_DATABASE_URL or ~/.sessionstate
	$(BIN)/python -m sessionstate migrate

rollback: $(STAMP)  ## undo the last migration
	$(BIN)/python -m sessionstate rollback

status: $(STAMP)  ## list applied and pending migrations
	$(BIN)/python -m sessionstate status

test: $(STAMP)  ## run the test suite
	$(BIN)/python -m pytest

# The lowest peewee setup.cfg admits, in its own .venv-peewee-lowest: the SQLite tests.
PEEWEE_LOWEST := $(shell sed -n 's/^ *peewee>=\([0-9.]*\),.*/\1/p' setup.cfg)
test-peewee-lowest:  ## the SQLite tests against the lowest peewee setup.cfg admits
	sed 's/^peewee==.*/peewee==$(PEEWEE_LOWEST)/' constraints.txt > .constraints-peewee-lowest.txt
	test -x .venv-peewee-lowest/bin/python || $(PYTHON) -m venv .venv-peewee-lowest
	.venv-peewee-lowest/bin/python -m pip install --quiet --disable-pip-version-check -c .constraints-peewee-lowest.txt -e '.[test,postgres,mysql,async,openai-agents]'
	.venv-peewee-lowest/bin/python -c "import peewee; assert peewee.__version__ == '$(PEEWEE_LOWEST)', peewee.__version__; print('peewee', peewee.__version__)"
	SESSIONSTATE_TEST_BACKENDS=sqlite .venv-peewee-lowest/bin/python -m pytest -q -m "not slow"

test-quick: $(STAMP)  ## the SQLite tests only, slow ones skipped
	SESSIONSTATE_TEST_BACKENDS=sqlite $(BIN)/python -m pytest -q -m "not slow"

# The other Pythons the package supports (python_requires): test-pythons runs test-quick on
# each, in its own .venv-X.Y. Each X.Y of PYTHON_VERSIONS is the newest X.Y.N installed under
# PYENV_VERSIONS; PYTHONS="/path/to/python3.12 /path/to/python3.13" names the interpreters
# instead. A Python that cannot be found is named, and fails the run under CI (CI=true).
PYTHON_VERSIONS ?= 3.12 3.13
PYENV_VERSIONS ?= /root/.pyenv/versions
PYTHONS ?= $(foreach v,$(PYTHON_VERSIONS),$(or $(shell ls -d $(PYENV_VERSIONS)/$(v).*/ 2>/dev/null \
	| grep -E '/$(subst .,\.,$(v))\.[0-9]+/$$' | sort -V | tail -n 1 | sed 's|/$$|/bin/python3|'),no-python-$(v)))

test-pythons:  ## test-quick on each of PYTHON_VERSIONS (or PYTHONS), each in its own .venv-X.Y
	@failed=""; missing=""; summary=""; \
	for py in $(PYTHONS); do \
	  case $$py in no-python-*) \
	    v=$${py#no-python-}; \
	    echo "test-pythons: no Python $$v: nothing matches $(PYENV_VERSIONS)/$$v.N/bin/python3 (set PYTHONS=...)" >&2; \
	    missing="$$missing $$v"; continue;; \
	  esac; \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || { \
	    echo "test-pythons: $$py cannot be run" >&2; missing="$$missing $$py"; continue; }; \
	  echo "=== Python $$v: $$py, in .venv-$$v"; \
	  start=$$(date +%s); \
	  if $(MAKE) --no-print-directory PYTHON=$$py VENV=.venv-$$v test-quick; then result=passed; \
	  else result=FAILED; failed="$$failed $$v"; fi; \
	  summary="$$summary $$v:$$result($$(( $$(date +%s) - start ))s)"; \
	done; \
	echo "test-pythons:$$summary$${missing:+ missing:$$missing}"; \
	if [ -n "$$failed" ]; then echo "test-pythons: FAILED on$$failed" >&2; exit 1; fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$CI" = true ]; then echo "test-pythons: Python(s) missing under CI:$$missing" >&2; exit 1; fi; \
	  echo "test-pythons: NOT tested on$$missing (missing here; this fails under CI)" >&2; \
	fi

bench: $(STAMP)  ## sessionstate vs hand-written SQL: BACKEND=sqlite (default), postgresql or mysql
	@$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/python -m pip install --quiet --disable-pip-version-check 'matplotlib>=3.7,<4' || echo "(matplotlib not installable: the bench runs without its chart)"
	$(BIN)/python -m bench.run --backend "$(BACKEND)" $(BENCH_ARGS)

clean:  ## remove the virtual environments and caches
	rm -rf $(VENV) .venv-[0-9]* build *.egg-info .pytest_cache
