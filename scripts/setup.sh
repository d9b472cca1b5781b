#!/usr/bin/env bash
# Idempotent setup: a project venv with firedrill and its dev tools, and the system packages the
# drills and tests need (PostgreSQL 13+ and Redis server binaries, Chromium for report checks).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v pg_config >/dev/null 2>&1 || need_apt+=(postgresql)
# The HA staging (local-ha): etcd 3.4 and HAProxy from Debian; Patroni from PyPI in its own venv below.
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || need_apt+=(haproxy)
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
# The zone drills: network namespaces and veth links (ip netns, ip link).
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
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

# Patroni runs as the postgres user (it starts PostgreSQL itself), so its venv is made from Debian's
# /usr/bin/python3 in a world-readable directory: a venv under root's home is not executable by postgres.
PATRONI_VENV=${FIREDRILL_PATRONI_VENV:-/opt/firedrill/patroni-venv}
if [[ ! -x $PATRONI_VENV/bin/patroni ]]; then
  if [[ $(id -u) -eq 0 && -x /usr/bin/python3 ]]; then
    echo "setup: installing Patroni 4 into $PATRONI_VENV"
    mkdir -p "$PATRONI_VENV"
    /usr/bin/python3 -m venv "$PATRONI_VENV"
    "$PATRONI_VENV/bin/python" -m pip install -q --disable-pip-version-check 'patroni[psycopg3,etcd3]>=4.0,<5' 2>&1 | grep -v '^WARNING: Location' || true
    chmod a+rx "$(dirname "$PATRONI_VENV")"
    chmod -R a+rX "$PATRONI_VENV"
    "$PATRONI_VENV/bin/patroni" --version >/dev/null # fail here, not later
  else
    echo "setup: no Patroni at $PATRONI_VENV: the local-ha drills will say so (run this as root to install it)" >&2
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
