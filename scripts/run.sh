#!/usr/bin/env bash
# Set everything up and run voxflow: system packages (when we can install them), the
# virtualenv, then `voxflow serve` on SQLite in the data directory (port 8080). With no trunk
# configured, calls go to the built-in softphone on sip:127.0.0.1:5070.
#
#   scripts/run.sh [serve options...]      e.g. scripts/run.sh --port 9000 --config voxflow.toml
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
	scripts/setup-debian.sh
elif command -v sudo >/dev/null 2>&1; then
	sudo scripts/setup-debian.sh
else
	echo "run.sh: not root and no sudo; skipping scripts/setup-debian.sh" >&2
fi

make install
exec .venv/bin/voxflow serve "$@"
