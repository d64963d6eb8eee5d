# The two commands: `make run` and `make test`. Both set up what is missing first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.synced-$(shell cat uv.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint bench chaos postgres fonts promtool browser screenshots wrk clean asyncapi

$(STAMP): pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/pip || $(BIN)/python -m ensurepip --upgrade >/dev/null
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@# --compile-bytecode: the libraries' .pyc written once here. Where PYTHONDONTWRITEBYTECODE is set (CI images),
	@# every process compiled them again from source as it imported them: seconds of CPU per service and per test
	@# process, and an import made lazily while serving (anyio's backend) held the event loop for it.
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --frozen --inexact --quiet --compile-bytecode
	@rm -f $(VENV)/.synced-* && touch $@

run: $(STAMP) fonts
	$(BIN)/onestop run

# PostgreSQL: the suite starts its own throwaway server; Debian's package provides the binaries.
postgres:
	@./scripts/ensure-postgres.sh

# The alert rules are checked with Debian's promtool when it installs (tests/e2e/test_monitoring.py).
promtool:
	@./scripts/ensure-promtool.sh

# The HTTP benchmark's load generator: Debian's wrk (compiled; a Python client would compete for the same cores).
wrk:
	@./scripts/ensure-wrk.sh

# Letters (notify's post channel) are printed in Debian's fonts-nanum, which has Hangul.
fonts:
	@./scripts/ensure-fonts.sh

# The portal's browser tests and screenshots drive Debian's chromium (Playwright's own download does not work here).
browser:
	@./scripts/ensure-chromium.sh

# docs/screenshots/*.png of every main page, from a platform started for the purpose.
screenshots: $(STAMP) fonts browser
	$(BIN)/python -m tests.portal.screenshots

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) postgres fonts browser wrk promtool lint
	$(BIN)/onestop asyncapi --check
	@$(BIN)/pytest -n 2; code=$$?; if [ $$code -eq 5 ]; then echo 'pytest collected no tests' >&2; exit 1; fi; exit $$code

# Every benchmark runs even when an earlier one misses a floor; the status says whether any did. The HTTP benchmark
# runs before the screenings and waits for a quiet machine (bench.probes.wait_for_quiet), so that none of the heavy
# parts runs beside it.
# BENCH_API_ARGS: options of bench/api.py (e.g. "--seconds 30 --backends sqlite"; see its --help).
bench: $(STAMP) postgres fonts wrk
	@status=0; \
	$(BIN)/python bench/bus.py || status=1; \
	$(BIN)/python bench/eligibility.py || status=1; \
	$(BIN)/python bench/api.py $(BENCH_API_ARGS) || status=1; \
	$(BIN)/python bench/durability.py || status=1; \
	$(BIN)/python bench/screening_runs.py || status=1; \
	$(BIN)/python bench/screening.py || status=1; \
	exit $$status

# The fault suite at length: 2,000 applications on the NATS cluster, PostgreSQL and two replicas per service while
# nodes, replicas and connections are killed (make test runs a shorter one).
chaos: $(STAMP) postgres fonts
	CHAOS_APPLICATIONS=2000 CHAOS_TIMEOUT=5400 $(BIN)/pytest tests/chaos -s

asyncapi: $(STAMP)
	$(BIN)/onestop asyncapi

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
