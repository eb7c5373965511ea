#!/usr/bin/env bash
# Install the named Debian packages that are missing; `apt-get update` runs at most once,
# and only when something must be installed. Safe to run again and again.
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "ensure-debs: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
fi
echo "ensure-debs: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
