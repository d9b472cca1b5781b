#!/usr/bin/env bash
# Idempotent setup: a project venv with firedrill and its dev tools, and the system packages the
# drills and tests need (PostgreSQL 13+ and Redis server binaries, Chromium for report checks).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v pg_config >/dev/null 2>&1 || need_apt+=(postgresql)
if [[ "${FIREDRILL_WITH_BROWSER:-0}" == 1 ]] && ! command -v chromium >/dev/null 2>&1; then
  need_apt+=(chromium)
fi
if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "setup: installing ${need_apt[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install: ${need_apt[*]} (apt-get install ${need_apt[*]})" >&2
    exit 2
  fi
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.firedrill-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import firedrill, pytest_bdd, psycopg, redis, boto3, moto' # fail here, not later
  touch "$stamp"
fi
