#!/usr/bin/env bash
# Idempotent set-up for a Debian 12 machine (as root): the apt packages the service and its tests
# run, and a virtualenv with the pinned Python dependencies. Does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium + chromium-driver: the web console's tests drive a real headless browser.
# postgresql: the test suite runs a second time against a throwaway server of its own, and
# `make cluster` runs one for its nodes (core/postgres_server.py starts both from
# /usr/lib/postgresql/15/bin, not the system one).
APT_PACKAGES=(
  kamailio kamailio-sqlite-modules kamailio-postgres-modules kamailio-extra-modules
  redis-server sip-tester espeak-ng sox sqlite3 postgresql python3-venv baresip-core
  chromium chromium-driver
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing apt packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the pinned dependencies changed.
stamp=.venv/.installed-$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python dependencies (pinned in requirements.lock)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -c requirements.lock -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
