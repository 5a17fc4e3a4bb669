#!/bin/sh
# Install everything the tests need, then run ruff, mypy and the whole test suite.
# Idempotent: run it again and it only runs the checks. Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."

# Debian packages the tests drive for real: Chromium for the viewer tests, nginx (its own
# instance, started by tests/test_nginx.py) in front of the server for the docs/ci.md config.
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
# redis-server for the many-node tests (each test starts its own server in a temporary
# directory, never the service).
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing="$missing redis-server"
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The project and its test tools, in a virtualenv of its own.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
