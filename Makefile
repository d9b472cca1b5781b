# The two commands a new user needs (README):
#   make drills   set up, run every drill on the local staging, write evidence and reports
#   make test     set up, lint and type-check, run the whole test suite (what CI runs)
.PHONY: drills test setup lint

setup:
	@scripts/setup.sh

drills: setup
	.venv/bin/firedrill run all

lint: setup
	.venv/bin/ruff check firedrill tests bench
	.venv/bin/ruff format --check firedrill tests bench
	.venv/bin/mypy --strict firedrill

test: export FIREDRILL_WITH_BROWSER = 1
# Two workers (tests/conftest.py makes the units of work). zone_loss.feature runs once, in a child of
# tests/integration/test_zones.py, which holds its evidence to exact figures.
test: setup lint
	.venv/bin/pytest -p no:cacheprovider -q -n 2 --no-loadscope-reorder --ignore=features/zone_loss.feature
