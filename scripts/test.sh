#!/usr/bin/env bash
# Run every test: system packages (when we can install them), the virtualenv, then
# lint + types + the whole test suite with PostgreSQL required (never skipped).
#
#   scripts/test.sh
#
# Exits non-zero when anything fails, including a test run that collected no tests.
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
	scripts/setup-debian.sh
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	sudo -n scripts/setup-debian.sh
else
	echo "test.sh: not root and no password-less sudo; skipping scripts/setup-debian.sh" >&2
fi

make install

# tests/conftest.py fails (instead of skipping) the PostgreSQL tests when it cannot start a server.
export VOXFLOW_TEST_POSTGRES=required

# make stops at the first failing step and exits non-zero; pytest's exit code 5 ("no tests
# were collected") is non-zero too, so an empty run fails as well. Say so explicitly.
status=0
make check || status=$?
if [ "$status" -ne 0 ]; then
	echo "test.sh: make check failed (exit $status)" >&2
	exit "$status"
fi
echo "test.sh: all checks passed"
