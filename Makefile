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
test: setup lint
	.venv/bin/pytest -p no:cacheprovider -q
