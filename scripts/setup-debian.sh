#!/usr/bin/env bash
# System packages for building, testing and running voxflow on Debian 12 (bookworm).
#
# Run as root or through sudo. Idempotent: when every package is already installed it does
# nothing (no apt-get update), so repeated runs are fast. It never starts the system PostgreSQL
# service: the tests start a throwaway cluster of their own.
set -euo pipefail

PACKAGES=(
	# build and run voxflow
	python3
	python3-venv
	python3-dev
	build-essential
	# the tests start their own cluster with these binaries
	postgresql
	# SIP and media tooling for the calling tests
	sip-tester
	kamailio
	baresip
	tshark
	sox
	# HTTP load generator for bench/
	wrk
)

if [ "$(id -u)" -ne 0 ]; then
	echo "setup-debian.sh: run as root (or: sudo $0)" >&2
	exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
	if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed$'; then
		missing+=("$pkg")
	fi
done

if [ "${#missing[@]}" -eq 0 ]; then
	echo "setup-debian.sh: all system packages are present"
	exit 0
fi

echo "setup-debian.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# Keep package scripts from starting services (PostgreSQL, Kamailio) while installing. An
# existing policy (as in container images) is left alone; ours is removed on exit.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi

apt-get update
apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
